//! Named points where a test can make the process die at an exact moment (what a kill -9 hits
//! only by luck): `QUAKELENS_FAILPOINT=<name>:<n>` aborts the process the n-th time the code
//! passes `<name>`. Unset in production, where a pass costs one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// After the lake sink's Delta commits of a batch, before its Kafka positions are stored.
pub const LAKE_AFTER_COMMIT: &str = "lake.after-commit";

fn armed() -> Option<&'static (String, u64)> {
    static POINT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    POINT
        .get_or_init(|| {
            let v = std::env::var("QUAKELENS_FAILPOINT").ok()?;
            let (name, n) = v.split_once(':')?;
            Some((name.to_string(), n.parse().ok()?))
        })
        .as_ref()
}

/// Passes the point `name`; aborts if the environment armed it and this is the chosen pass.
pub fn pass(name: &str) {
    static PASSES: AtomicU64 = AtomicU64::new(0);
    if let Some((armed, n)) = armed() {
        if armed == name && PASSES.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("failpoint {name}: aborting on pass {n}");
            std::process::abort();
        }
    }
}
