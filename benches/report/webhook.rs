//! Webhook acknowledgement and pre-rendering (not written yet).

use crate::harness::{Ctx, Section};

pub async fn run(_ctx: &Ctx) -> Section {
    Section {
        title: "Webhook acknowledgement and pre-rendering".into(),
        body: "Not measured yet.".into(),
        targets: Vec::new(),
        charts: Vec::new(),
    }
}
