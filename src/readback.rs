//! Reading tensors back to the host. Always asynchronous: a browser cannot block on the GPU.

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
