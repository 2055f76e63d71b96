//! The crate's one macro: how probes are gated on their cargo feature.

/// Compiles the items that follow only with cargo feature `$feature`: the one way probes are
/// gated.
macro_rules! cfg_feature {
    ($feature:literal, $($item:item)*) => {
        $(
            #[cfg(feature = $feature)]
            $item
        )*
    };
}
pub(crate) use cfg_feature;
