//! What `[[limits.rate]]` and `[[auth]]` entries share: a name that labels metrics (unique in
//! its table), and a scope by path prefix and by pool.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::Spanned;

use crate::error::ConfigError;
use crate::PoolName;

/// An error at a span, for key `key` of the entry's table.
pub(crate) type Invalid<'a> = dyn Fn(Range<usize>, &str, String) -> ConfigError + 'a;

/// `name`: 1 to 32 of A-Z a-z 0-9 _ - (it labels metrics), not yet in `seen` (`entries`: what
/// the table holds, for the message).
pub(crate) fn label_name(
    name: &Spanned<String>,
    seen: &mut BTreeSet<String>,
    entries: &str,
    invalid: &Invalid<'_>,
) -> Result<(), ConfigError> {
    let n = name.get_ref();
    let ok = (1..=32).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if !ok {
        return Err(invalid(
            name.span(),
            "name",
            format!("invalid name {n:?}: 1 to 32 of A-Z a-z 0-9 _ - (it labels metrics)"),
        ));
    }
    if !seen.insert(n.clone()) {
        return Err(invalid(
            name.span(),
            "name",
            format!("{n:?} names two {entries}: each needs its own"),
        ));
    }
    Ok(())
}

/// `path_prefix`, which must start with '/'.
pub(crate) fn path_prefix(
    p: Option<Spanned<String>>,
    invalid: &Invalid<'_>,
) -> Result<Option<String>, ConfigError> {
    match p {
        None => Ok(None),
        Some(p) if p.get_ref().starts_with('/') => Ok(Some(p.into_inner())),
        Some(p) => Err(invalid(
            p.span(),
            "path_prefix",
            format!("{:?} must start with '/'", p.get_ref()),
        )),
    }
}

/// `pool`, which must name a pool of the config.
pub(crate) fn pool(
    p: Option<Spanned<String>>,
    pools: &BTreeMap<PoolName, Vec<crate::Backend>>,
    invalid: &Invalid<'_>,
) -> Result<Option<PoolName>, ConfigError> {
    let Some(p) = p else { return Ok(None) };
    pools
        .keys()
        .find(|k| k.as_str() == p.get_ref())
        .cloned()
        .map(Some)
        .ok_or_else(|| invalid(p.span(), "pool", format!("no pool named {:?}", p.get_ref())))
}
