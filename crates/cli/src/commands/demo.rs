//! `annals demo`: a short order flow on the embedded engine, read back three ways.

use std::path::Path;
use std::process::ExitCode;

use annals_core::{
    EventAppender, EventReader, EventType, ExpectedRevision, NewEvent, ReadAllOptions,
    ReadStreamOptions, StreamName, StreamWrite,
};
use serde_json::json;

use crate::output::print_event;

fn event(event_type: &str, data: serde_json::Value) -> anyhow::Result<NewEvent> {
    Ok(NewEvent::json(
        EventType::new(event_type)?,
        data.to_string(),
    ))
}

pub(crate) async fn run(data: &Path) -> anyhow::Result<ExitCode> {
    let store = super::open(data)?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let order = StreamName::new(format!("order-{}", &run[..8]))?;
    let customer = StreamName::new(format!("customer-{}", &run[..8]))?;
    println!("appending to {order} and {customer} in {}", data.display());
    let placed = event(
        "OrderPlaced",
        json!({"total": 120, "customer": customer.as_str()}),
    )?;
    let first = store
        .append(&order, ExpectedRevision::NoStream, vec![placed])
        .await?;
    // Reserve credit and accept the order atomically, across two streams.
    let results = store
        .append_multi(vec![
            StreamWrite {
                stream: customer.clone(),
                expected: ExpectedRevision::Any,
                events: vec![event("CreditReserved", json!({"amount": 120}))?],
            },
            StreamWrite {
                stream: order.clone(),
                expected: first.next_expected(),
                events: vec![event("OrderAccepted", json!({}))?],
            },
        ])
        .await?;
    println!(
        "multi-stream append committed at positions {:?}",
        results.iter().map(|r| r.positions).collect::<Vec<_>>()
    );
    println!("\n-- {order}");
    for e in store
        .read_stream(&order, ReadStreamOptions::forward())
        .await?
    {
        print_event(&e, false);
    }
    println!("\n-- $ce-order (last 3)");
    let category = StreamName::new("$ce-order")?;
    for e in store
        .read_stream(&category, ReadStreamOptions::backward().limit(3))
        .await?
    {
        print_event(&e, false);
    }
    println!("\n-- $all (last 3)");
    for e in store
        .read_all(ReadAllOptions::backward().limit(3))
        .await?
        .events
    {
        print_event(&e, false);
    }
    store.close();
    Ok(ExitCode::SUCCESS)
}
