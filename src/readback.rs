//! Reading tensors back to the host. Always asynchronous: a browser cannot block on the GPU.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use burn::tensor::Tensor;

use crate::err;
use crate::error::Result;

/// The values of a float tensor, row-major.
pub async fn floats<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    let data =
        tensor.into_data_async().await.map_err(|e| err!(Gpu, "reading a tensor back from the GPU failed: {e:?}"))?;
    data.try_into_vec::<f32>().map_err(|e| err!(Gpu, "unexpected tensor data: {e:?}"))
}

/// One float scalar.
pub async fn scalar(tensor: Tensor<1>) -> Result<f32> {
    Ok(floats(tensor).await?[0])
}

/// A read of a float tensor started now and awaited later: the copy is queued behind the work
/// issued so far, so work issued after [`Started::new`] keeps the GPU busy while the values
/// travel (WebGPU's `mapAsync`, wgpu's polling thread natively) instead of waiting for them.
pub struct Started {
    read: Pin<Box<dyn Future<Output = Result<Vec<f32>>>>>,
    done: Option<Result<Vec<f32>>>,
}

impl Started {
    /// Queues the read of `tensor`: burn's read is lazy, so it is polled once here, which
    /// submits the queued work and the copy and asks for the mapping, then stops at the wait.
    pub fn new<const D: usize>(tensor: Tensor<D>) -> Self {
        let mut read: Pin<Box<dyn Future<Output = Result<Vec<f32>>>>> = Box::pin(floats(tensor));
        let done = match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(values) => Some(values),
            Poll::Pending => None,
        };
        Started { read, done }
    }

    /// The values, once the GPU has done the work before the read.
    pub async fn finish(self) -> Result<Vec<f32>> {
        match self.done {
            Some(values) => values,
            None => self.read.await,
        }
    }
}
