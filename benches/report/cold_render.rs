//! Cold renders (not written yet).

use crate::harness::{Ctx, Section};

pub async fn run(_ctx: &Ctx) -> Section {
    Section {
        title: "Cold renders".into(),
        body: "Not measured yet.".into(),
        targets: Vec::new(),
        charts: Vec::new(),
    }
}
