//! Scaled dot-product attention with transformers' eager masks: causal, key padding and, for
//! Gemma 3's sliding layers, a window of the last `W` keys. The KV cache of a sliding layer keeps
//! only the keys a later query can still see. A pass without a cache (training, evaluation, a
//! prompt's first pass) on a GPU runs the fused kernel ([`crate::kernels::attention`]: RoPE
//! inside, no score matrix) where the device runs the shape correctly; generation steps and the
//! CPU backend (where composed ops are the fast path) run the eager ops.

use burn::tensor::{Device, Tensor, activation};

use crate::kernels::{self, AttentionInputs, AttentionShape};
use crate::model::config::RopeConfig;
use crate::model::layers::Rope;

/// Keys and values of earlier positions, per layer, for incremental decoding.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
    len: usize,
}

/// One layer's cached keys and values `[batch, kv_heads, kept, head_dim]`.
struct LayerCache {
    k: Tensor<4>,
    v: Tensor<4>,
    /// Position of the first kept key (above 0 once a sliding layer has dropped keys).
    start: usize,
}

impl KvCache {
    /// Number of positions already seen (also those a sliding layer no longer keeps).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions whose keys `layer` still holds (fewer than [`KvCache::len`] in a sliding layer).
    pub fn kept(&self, layer: usize) -> usize {
        self.layers.get(layer).and_then(Option::as_ref).map_or(0, |c| c.k.dims()[2])
    }

    /// Appends this step's keys/values for `layer` and returns the keys to attend to with the
    /// position of the first. With a `window`, only the last `window - 1` keys are kept: a later
    /// query at position `p` sees keys `> p - window`.
    fn extend(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>, window: Option<usize>) -> LayerCache {
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, || None);
        }
        let all = match self.layers[layer].take() {
            Some(c) => LayerCache { k: Tensor::cat(vec![c.k, k], 2), v: Tensor::cat(vec![c.v, v], 2), start: c.start },
            None => LayerCache { k, v, start: 0 },
        };
        let held = all.k.dims()[2];
        // One key more than needed when the window is 1: the mask hides it, and nothing is empty.
        let keep = window.map_or(held, |w| held.min(w.saturating_sub(1).max(1)));
        self.layers[layer] = Some(LayerCache {
            k: all.k.clone().narrow(2, held - keep, keep),
            v: all.v.clone().narrow(2, held - keep, keep),
            start: all.start + held - keep,
        });
        all
    }

    /// Marks `added` new positions as cached once every layer has extended.
    fn advance(&mut self, added: usize) {
        self.len += added;
    }
}

/// What an additive mask depends on besides the batch: the window and the first key's position.
type MaskKey = (Option<usize>, usize);

/// One attention call: head counts, the score scale, the window of a sliding layer and the RoPE
/// applied to queries and keys (none for GPT-2's learned positions).
pub struct AttentionSpec<'a> {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f64,
    /// Query `i` sees key `j` only if `i - j < window`.
    pub window: Option<usize>,
    pub rope: Option<&'a RopeConfig>,
}

/// Per-forward attention context: which keys each query may see, and the cache to extend.
pub struct AttentionContext<'a> {
    pub cache: Option<&'a mut KvCache>,
    pub batch: usize,
    pub q_len: usize,
    /// Positions already cached: the first query's position.
    past: usize,
    /// `[batch, past + q_len]`, 1 for a real token; `None` when nothing is padded.
    key_mask: Option<Vec<u8>>,
    /// Additive masks built so far, by (window, first key position).
    biases: Vec<(MaskKey, Option<Tensor<4>>)>,
    /// RoPE tables built so far (composed path), by configuration and head size.
    ropes: Vec<((RopeConfig, usize), Rope)>,
    /// The fused kernel's mask and RoPE tables built so far, by RoPE configuration and head size.
    kernel_inputs: Vec<(KernelInputsKey, AttentionInputs)>,
    /// Whether the fused kernel's inputs were given ([`AttentionContext::with_kernel_inputs`]).
    prepared: bool,
    kernel: KernelUse,
    device: Device,
}

/// What the fused kernel's inputs hold tables for: the RoPE configuration and head size (`None`:
/// no RoPE).
pub type KernelInputsKey = Option<(RopeConfig, usize)>;

/// Where the fused attention kernel may run.
#[derive(Clone, Copy)]
enum KernelUse {
    /// Never: the CPU backend (composed ops are its fast path) or a pass with a cache.
    Never,
    /// For every shape [`kernels::attention_fits`] admits under the device's shader loop limit.
    Fitting(Option<u64>),
}

impl<'a> AttentionContext<'a> {
    /// Queries at positions `past .. past + q_len` (past = the cache's length) over a key padding
    /// mask (`key_mask[b * k_len + j]` = 1 for a real token, k_len = past + q_len).
    pub fn new(
        batch: usize,
        q_len: usize,
        key_mask: Option<&[u8]>,
        cache: Option<&'a mut KvCache>,
        device: &Device,
    ) -> Self {
        let past = cache.as_ref().map_or(0, |c| c.len());
        if let Some(mask) = key_mask {
            assert_eq!(mask.len(), batch * (past + q_len), "key mask must cover the cached and new positions");
        }
        let key_mask = key_mask.filter(|m| m.contains(&0)).map(<[u8]>::to_vec);
        let info = crate::device::info_of(device);
        let kernel = if cache.is_some() || info.is_cpu() {
            KernelUse::Never
        } else {
            KernelUse::Fitting(info.shader_loop_limit)
        };
        AttentionContext {
            cache,
            batch,
            q_len,
            past,
            key_mask,
            biases: Vec::new(),
            ropes: Vec::new(),
            kernel_inputs: Vec::new(),
            prepared: false,
            kernel,
            device: device.clone(),
        }
    }

    /// A pass without a cache whose fused-kernel inputs are given, already on the device: a
    /// recorded training step reads them from its input buffer. A layer that needs anything else
    /// from the host (inputs of another key, the eager path) still gets it, from `key_mask`, but
    /// counts it ([`crate::upload`]): such a pass cannot be recorded.
    pub fn with_kernel_inputs(
        batch: usize,
        q_len: usize,
        key_mask: Option<&[u8]>,
        inputs: Vec<(KernelInputsKey, AttentionInputs)>,
        device: &Device,
    ) -> AttentionContext<'static> {
        let mut ctx = AttentionContext::new(batch, q_len, key_mask, None, device);
        ctx.kernel_inputs = inputs;
        ctx.prepared = true;
        ctx
    }

    /// The keys of the fused kernel's inputs this pass was given or built.
    pub fn kernel_input_keys(&self) -> Vec<KernelInputsKey> {
        self.kernel_inputs.iter().map(|(key, _)| key.clone()).collect()
    }

    /// Position of the first query (the number of cached positions).
    pub fn past_len(&self) -> usize {
        self.past
    }

    /// Attention of layer `layer`: queries `q [tokens, heads·d]` over the cached and the new keys
    /// and values `k, v [tokens, kv_heads·d]` (grouped-query: each kv head serves
    /// `heads / kv_heads` queries), RoPE applied to `q` and `k` here. Returns `[tokens, heads·d]`.
    pub fn attend(
        &mut self,
        layer: usize,
        q: Tensor<2>,
        k: Tensor<2>,
        v: Tensor<2>,
        spec: &AttentionSpec,
    ) -> Tensor<2> {
        let (b, len, d) = (self.batch, self.q_len, spec.head_dim);
        let shape = AttentionShape { batch: b, len, heads: spec.heads, kv_heads: spec.kv_heads, d };
        if let KernelUse::Fitting(limit) = self.kernel
            && kernels::attention_fits(&shape, limit)
        {
            let inputs = self.kernel_inputs(spec.rope, d);
            let split = |x: Tensor<2>, heads| x.reshape([b, len, heads, d]);
            let (q, k, v) = (split(q, spec.heads), split(k, spec.kv_heads), split(v, spec.kv_heads));
            return kernels::attention(q, k, v, &inputs, spec.scale, spec.window).reshape([b * len, spec.heads * d]);
        }
        if self.prepared {
            // The eager path's mask and tables come from the host.
            crate::upload::note();
        }
        let (mut q, mut k) = (split_heads(q, b, len, spec.heads), split_heads(k, b, len, spec.kv_heads));
        if let Some(config) = spec.rope {
            let rope = self.rope(config, d);
            (q, k) = (rope.apply(q), rope.apply(k));
        }
        self.attend_eager(layer, q, k, split_heads(v, b, len, spec.kv_heads), spec.scale, spec.window)
    }

    /// The RoPE tables of this pass's positions.
    fn rope(&mut self, config: &RopeConfig, head_dim: usize) -> Rope {
        let key = (config.clone(), head_dim);
        if let Some((_, rope)) = self.ropes.iter().find(|(k, _)| *k == key) {
            return rope.clone();
        }
        let rope = Rope::new(config, head_dim, self.past, self.q_len, &self.device);
        self.ropes.push((key, rope.clone()));
        rope
    }

    /// The fused kernel's key mask and RoPE tables (positions from 0: a pass without a cache).
    fn kernel_inputs(&mut self, config: Option<&RopeConfig>, head_dim: usize) -> AttentionInputs {
        let key = config.map(|c| (c.clone(), head_dim));
        if let Some((_, inputs)) = self.kernel_inputs.iter().find(|(k, _)| *k == key) {
            return inputs.clone();
        }
        let tables = config.map(|c| Rope::tables(c, head_dim, 0, self.q_len));
        let inputs = AttentionInputs::new(
            self.batch,
            self.q_len,
            self.key_mask.as_deref(),
            tables.as_ref().map(|(cos, sin)| (cos.as_slice(), sin.as_slice())),
            &self.device,
        );
        self.kernel_inputs.push((key, inputs.clone()));
        inputs
    }

    /// Eager attention of `q [b, heads, q_len, d]` over the cached and the new `k`, `v`
    /// `[b, kv_heads, q_len, d]`, as transformers' `eager_attention_forward`, extending the cache
    /// if there is one.
    fn attend_eager(
        &mut self,
        layer: usize,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        scale: f64,
        window: Option<usize>,
    ) -> Tensor<2> {
        let keys = match self.cache.as_deref_mut() {
            Some(cache) => cache.extend(layer, k, v, window),
            None => LayerCache { k, v, start: 0 },
        };
        let [b, heads, q_len, d] = q.dims();
        let kv_heads = keys.k.dims()[1];
        let (k, v) = (repeat_kv(keys.k, heads / kv_heads), repeat_kv(keys.v, heads / kv_heads));
        let mut scores = q.matmul(k.swap_dims(2, 3)) * scale;
        if let Some(bias) = self.bias(window, keys.start) {
            scores = scores + bias;
        }
        let probs = activation::softmax(scores, 3);
        probs.matmul(v).swap_dims(1, 2).reshape([b * q_len, heads * d])
    }

    /// The additive mask `[batch, 1, q_len, keys]` for keys from position `start` on: 0 where a
    /// query may attend, `f32::MIN` elsewhere (transformers' eager mask, `finfo.min`). A query
    /// that sees no key at all (a padding row beyond a sliding window) thus gets a uniform,
    /// finite softmax, never NaN. `None` when every query sees every key.
    fn bias(&mut self, window: Option<usize>, start: usize) -> Option<Tensor<4>> {
        if let Some((_, bias)) = self.biases.iter().find(|(key, _)| *key == (window, start)) {
            return bias.clone();
        }
        let (batch, q_len, past) = (self.batch, self.q_len, self.past);
        let k_len = past + q_len;
        let visible = |b: usize, i: usize, j: usize| {
            let pos = past + i;
            j <= pos
                && window.is_none_or(|w| pos - j < w)
                && self.key_mask.as_ref().is_none_or(|m| m[b * k_len + j] != 0)
        };
        let keys = start..k_len;
        let all_visible = (0..batch).all(|b| (0..q_len).all(|i| keys.clone().all(|j| visible(b, i, j))));
        let bias = (!all_visible).then(|| {
            let mut data = Vec::with_capacity(batch * q_len * keys.len());
            for b in 0..batch {
                for i in 0..q_len {
                    data.extend(keys.clone().map(|j| if visible(b, i, j) { 0.0 } else { f32::MIN }));
                }
            }
            crate::upload::floats(data, [batch, 1, q_len, keys.len()], &self.device)
        });
        self.biases.push(((window, start), bias.clone()));
        bias
    }

    /// Records the new positions in the cache; call once after the last layer.
    pub fn finish(self) {
        if let Some(cache) = self.cache {
            cache.advance(self.q_len);
        }
    }
}

/// `[b, kv, len, d] -> [b, kv·groups, len, d]`, each kv head repeated `groups` times in a row
/// (transformers' `repeat_kv`).
fn repeat_kv(x: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return x;
    }
    let [b, kv, len, d] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, kv, groups, len, d]).reshape([b, kv * groups, len, d])
}

/// `[tokens, heads·d] -> [batch, heads, len, d]`.
fn split_heads(x: Tensor<2>, batch: usize, len: usize, heads: usize) -> Tensor<4> {
    let [_, width] = x.dims();
    x.reshape([batch, len, heads, width / heads]).swap_dims(1, 2)
}
