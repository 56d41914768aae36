//! The audit log's conformance tests: every engine records entries durably, lists them newest
//! first in pages that cover each once, filters them, and prunes them by time.

use hookd::store::audit::new_audit_id;
use hookd::store::{AuditEntry, AuditFilter, Store};

use super::Harness;

fn entry(at_ms: u64, actor: &str, subscription: Option<&str>, owner: Option<&str>) -> AuditEntry {
    AuditEntry {
        id: new_audit_id(at_ms),
        at_ms,
        actor: actor.to_string(),
        action: "updated".to_string(),
        kind: "subscription".to_string(),
        object: subscription.unwrap_or_default().to_string(),
        subscription: subscription.map(str::to_string),
        owner: owner.map(str::to_string),
        detail: "url".to_string(),
    }
}

/// Every entry matching `filter`, page by page.
async fn list_all(s: &dyn Store, filter: &AuditFilter, page: usize) -> Vec<AuditEntry> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let (items, next) = s.list_audit(filter, cursor.as_deref(), page).await.unwrap();
        assert!(items.len() <= page, "a page holds at most its limit");
        out.extend(items);
        match next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
    panic!("the listing never ended");
}

pub(super) async fn audit_entries_are_kept_and_list_newest_first_in_pages(h: &mut Harness) {
    let s = h.store();
    assert!(s
        .list_audit(&AuditFilter::default(), None, 10)
        .await
        .unwrap()
        .0
        .is_empty());
    let written: Vec<AuditEntry> = (0..7u64)
        .map(|i| entry(1_000 + i * 10, "ci", Some("a"), None))
        .collect();
    for e in &written {
        s.record_audit(e.clone()).await.unwrap();
    }
    // Two in the same millisecond keep the order they were made in.
    let same = [
        entry(2_000, "ci", None, None),
        entry(2_000, "ops", None, None),
    ];
    for e in &same {
        s.record_audit(e.clone()).await.unwrap();
    }
    h.reopen().await;
    let mut expected: Vec<AuditEntry> = written.iter().chain(&same).cloned().collect();
    expected.reverse();
    for page in [1, 2, 3, 9, 50] {
        let all = list_all(h.store(), &AuditFilter::default(), page).await;
        assert_eq!(all, expected, "page size {page}");
    }
    let (first, next) = h
        .store()
        .list_audit(&AuditFilter::default(), None, 2)
        .await
        .unwrap();
    assert_eq!(first, expected[..2].to_vec());
    assert_eq!(next.as_deref(), Some(expected[1].id.as_str()));
    let (last, none) = h
        .store()
        .list_audit(&AuditFilter::default(), Some(&expected[7].id), 5)
        .await
        .unwrap();
    assert_eq!(last, vec![expected[8].clone()]);
    assert_eq!(none, None, "nothing after the oldest");
}

pub(super) async fn audit_listing_filters_by_subscription_owner_actor_and_time(h: &mut Harness) {
    let s = h.store();
    let entries = [
        entry(1_000, "ci", Some("a"), Some("acme")),
        entry(2_000, "dashboard", Some("b"), None),
        entry(3_000, "portal:acme", Some("a"), Some("acme")),
        entry(4_000, "ci", Some("c"), Some("globex")),
        entry(5_000, "ci", None, Some("acme")),
    ];
    for e in &entries {
        s.record_audit(e.clone()).await.unwrap();
    }
    let ids = |list: Vec<AuditEntry>| list.into_iter().map(|e| e.at_ms).collect::<Vec<_>>();
    let cases = [
        (
            AuditFilter {
                subscription: Some("a".into()),
                ..Default::default()
            },
            vec![3_000, 1_000],
        ),
        (
            AuditFilter {
                owner: Some("acme".into()),
                ..Default::default()
            },
            vec![5_000, 3_000, 1_000],
        ),
        (
            AuditFilter {
                owner: Some("nobody".into()),
                ..Default::default()
            },
            vec![],
        ),
        (
            AuditFilter {
                actor: Some("ci".into()),
                ..Default::default()
            },
            vec![5_000, 4_000, 1_000],
        ),
        (
            AuditFilter {
                since_ms: Some(2_000),
                until_ms: Some(4_000),
                ..Default::default()
            },
            vec![3_000, 2_000],
        ),
        (
            AuditFilter {
                owner: Some("acme".into()),
                actor: Some("ci".into()),
                since_ms: Some(1_001),
                ..Default::default()
            },
            vec![5_000],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(ids(list_all(s, &filter, 1).await), expected, "{filter:?}");
        assert_eq!(ids(list_all(s, &filter, 10).await), expected, "{filter:?}");
    }
}

pub(super) async fn pruning_the_audit_log_removes_only_entries_before_the_cutoff(h: &mut Harness) {
    let s = h.store();
    for at in [1_000, 2_000, 3_000, 4_000] {
        s.record_audit(entry(at, "ci", Some("a"), None))
            .await
            .unwrap();
    }
    assert_eq!(
        s.prune_audit(3_000, 1).await.unwrap(),
        1,
        "at most its limit"
    );
    assert_eq!(s.prune_audit(3_000, 100).await.unwrap(), 1);
    assert_eq!(s.prune_audit(3_000, 100).await.unwrap(), 0);
    h.reopen().await;
    let left: Vec<u64> = list_all(h.store(), &AuditFilter::default(), 10)
        .await
        .into_iter()
        .map(|e| e.at_ms)
        .collect();
    assert_eq!(left, vec![4_000, 3_000]);
}

/// An export carries the audit log (on its first page), and an import into a new store of the
/// same engine (or any other: the records are the same) lists it as it was.
pub(super) async fn an_export_carries_the_audit_log_into_the_imported_store(h: &mut Harness) {
    use hookd::store::Portable;
    let s = h.store();
    let written = [
        entry(1_000, "ci", Some("a"), Some("acme")),
        entry(2_000, "portal:acme", Some("a"), Some("acme")),
        entry(3_000, "hookd", None, None),
    ];
    for e in &written {
        s.record_audit(e.clone()).await.unwrap();
    }
    let (first, _) = s.export(None, 10).await.unwrap();
    let exported: Vec<AuditEntry> = first
        .iter()
        .filter_map(|r| match r {
            Portable::Audit(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        exported,
        written.to_vec(),
        "oldest first, on the first page"
    );
    // As JSON lines, as `hookd store export` writes them.
    let line = serde_json::to_string(&Portable::Audit(written[1].clone())).unwrap();
    assert!(line.starts_with("{\"type\":\"audit\""), "{line}");
    assert_eq!(
        serde_json::from_str::<Portable>(&line).unwrap(),
        Portable::Audit(written[1].clone())
    );

    let mut other = Harness::new(h.open, h.hands_on);
    let t = other.store();
    t.import(first).await.unwrap();
    let mut expected = written.to_vec();
    expected.reverse();
    assert_eq!(list_all(t, &AuditFilter::default(), 2).await, expected);
    let filter = AuditFilter {
        owner: Some("acme".into()),
        ..Default::default()
    };
    assert_eq!(list_all(t, &filter, 10).await.len(), 2);
    other.close().await;
}

pub(super) async fn erasing_an_owner_from_the_audit_log_removes_exactly_its_entries(
    h: &mut Harness,
) {
    let s = h.store();
    let entries = [
        entry(1_000, "ci", Some("a"), Some("acme")),
        entry(2_000, "portal:acme", None, None),
        entry(3_000, "ci", Some("g"), Some("globex")),
        entry(4_000, "portal:acme-2", Some("b"), Some("acme-2")),
        entry(5_000, "hookd", None, None),
    ];
    for e in &entries {
        s.record_audit(e.clone()).await.unwrap();
    }
    assert_eq!(s.erase_audit_owner("acme").await.unwrap(), 2);
    assert_eq!(
        s.erase_audit_owner("acme").await.unwrap(),
        0,
        "nothing left of it"
    );
    h.reopen().await;
    let left: Vec<u64> = list_all(h.store(), &AuditFilter::default(), 10)
        .await
        .into_iter()
        .map(|e| e.at_ms)
        .collect();
    assert_eq!(left, vec![5_000, 4_000, 3_000]);
}
