//! Runs the SPEC §9 member-withdrawal example end to end.

#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../examples/member_withdrawal.rs"]
mod demo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_withdrawal_flow_is_idempotent() {
    let Some(o) = demo::run_demo().await.expect("demo runs") else {
        return;
    };
    println!("{o:?}");
    assert_eq!(o.members_left, 1, "m-1 deleted, m-2 kept");
    assert_eq!(
        o.goodbye_mails, 1,
        "exactly one goodbye mail despite redelivery"
    );
    assert_eq!(o.keys_left, 1, "m-1's data key shredded");
    assert_eq!(o.hidden_posts, 2);
    assert_eq!(o.visible_posts, 1);
    assert_eq!(
        o.skipped_duplicates, 3,
        "each subscriber skipped the redelivered message once"
    );
}
