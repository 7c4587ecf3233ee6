//! Clone and incremental fetch (not written yet).

use crate::harness::{Ctx, Section};

pub async fn run(_ctx: &Ctx) -> Section {
    Section {
        title: "Clone and incremental fetch".into(),
        body: "Not measured yet.".into(),
        targets: Vec::new(),
        charts: Vec::new(),
    }
}
