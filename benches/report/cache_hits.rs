//! Cache-hit GenerateManifest (not written yet).

use crate::harness::{Ctx, Section};

pub async fn run(_ctx: &Ctx) -> Section {
    Section {
        title: "Cache-hit GenerateManifest".into(),
        body: "Not measured yet.".into(),
        targets: Vec::new(),
        charts: Vec::new(),
    }
}
