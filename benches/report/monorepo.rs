//! Monorepo of 500 apps (not written yet).

use crate::harness::{Ctx, Section};

pub async fn run(_ctx: &Ctx) -> Section {
    Section {
        title: "Monorepo of 500 apps".into(),
        body: "Not measured yet.".into(),
        targets: Vec::new(),
        charts: Vec::new(),
    }
}
