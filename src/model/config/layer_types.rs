//! Which decoder layers use sliding-window attention (transformers' `layer_types`).

use super::FILE;
use super::fields::Fields;
use crate::err;
use crate::error::Result;

/// Which keys a decoder layer's queries see (transformers' `layer_types`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerAttention {
    /// Every earlier key (`full_attention`).
    Full,
    /// The last `sliding_window` keys, the query's own included (`sliding_attention`).
    Sliding,
}

/// Gemma 3's per-layer attention: `layer_types`, else expanded from `sliding_window_pattern`.
pub(super) fn gemma3_layer_types(f: &Fields, num_layers: usize) -> Result<Vec<LayerAttention>> {
    if let Some(value) = f.get("layer_types") {
        let items = value
            .as_array()
            .ok_or_else(|| err!(InvalidConfig, "{FILE}: \"layer_types\" must be a list, got {value}"))?;
        if items.len() != num_layers {
            return Err(err!(
                InvalidConfig,
                "{FILE}: \"layer_types\" has {} entries but num_hidden_layers is {num_layers}",
                items.len()
            ));
        }
        return items
            .iter()
            .enumerate()
            .map(|(i, item)| match item.as_str() {
                Some("full_attention") => Ok(LayerAttention::Full),
                Some("sliding_attention") => Ok(LayerAttention::Sliding),
                _ => Err(err!(
                    InvalidConfig,
                    "{FILE}: layer_types[{i}] is {item}; expected \"full_attention\" or \"sliding_attention\""
                )),
            })
            .collect();
    }
    let pattern = f.usize("sliding_window_pattern")?.ok_or_else(|| {
        err!(
            InvalidConfig,
            "{FILE}: a gemma3_text config needs \"layer_types\" (or the older \"sliding_window_pattern\") to say which layers use sliding-window attention; re-save the config with a current transformers or take config.json from the model's hub page"
        )
    })?;
    if pattern == 0 {
        return Err(err!(InvalidConfig, "{FILE}: \"sliding_window_pattern\" must be positive"));
    }
    // transformers: layer i slides unless (i + 1) is a multiple of the pattern.
    Ok((0..num_layers)
        .map(|i| if (i + 1) % pattern == 0 { LayerAttention::Full } else { LayerAttention::Sliding })
        .collect())
}
