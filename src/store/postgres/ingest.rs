//! Ingest: a call's events and their deliveries in one statement, each event once by its
//! `(request_id, status)`.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::pool::query;
use super::{PgStore, DB_NOW};
use crate::event::NewEvent;
use crate::store::{
    delivery_id_string, event_id_string, new_delivery_id, IngestError, Ingested, StoreError, Target,
};

type Events = [(NewEvent, Vec<Target>)];

/// A call's events, numbered: the first of each `(request_id, status)` in the call (a later one
/// is its duplicate), the id each event answers with, and the fresh ones (the firsts) to insert.
struct Numbered {
    first: HashMap<(String, String), usize>,
    ids: Vec<String>,
    fresh: Vec<usize>,
}

impl Numbered {
    /// Numbers the events; a second of the same `(request_id, status)` with another body is a
    /// conflict.
    fn of(events: &Events, now_ms: u64) -> Result<Numbered, IngestError> {
        let mut first: HashMap<(String, String), usize> = HashMap::new();
        let mut ids: Vec<String> = Vec::with_capacity(events.len());
        let mut fresh: Vec<usize> = Vec::new();
        for (index, (event, _)) in events.iter().enumerate() {
            let key = (event.request_id.clone(), event.status.clone());
            if let Some(&at) = first.get(&key) {
                if events[at].0.fingerprint != event.fingerprint {
                    return Err(IngestError::Conflict {
                        index,
                        request_id: event.request_id.clone(),
                        status: event.status.clone(),
                        event_id: ids[at].clone(),
                    });
                }
                ids.push(ids[at].clone());
                continue;
            }
            first.insert(key, index);
            ids.push(event_id_string(ulid::Ulid::from_parts(
                now_ms,
                rand::random(),
            )));
            fresh.push(index);
        }
        Ok(Numbered { first, ids, fresh })
    }

    /// The index of the first event of `event`'s `(request_id, status)`.
    fn first_of(&self, event: &NewEvent, index: usize) -> usize {
        let key = (event.request_id.clone(), event.status.clone());
        self.first.get(&key).copied().unwrap_or(index)
    }
}

/// The fresh events, as the insert's columns.
#[derive(Default)]
struct EventColumns<'a> {
    ids: Vec<&'a str>,
    request_ids: Vec<&'a str>,
    statuses: Vec<&'a str>,
    types: Vec<&'a str>,
    fingerprints: Vec<&'a [u8]>,
    bodies: Vec<&'a [u8]>,
    /// Each event's delivery ids, as a PostgreSQL array literal.
    deliveries: Vec<String>,
    owners: Vec<Option<&'a str>>,
}

/// The fresh events' deliveries, as the insert's columns.
#[derive(Default)]
struct DeliveryColumns<'a> {
    ids: Vec<String>,
    events: Vec<&'a str>,
    types: Vec<&'a str>,
    subscriptions: Vec<&'a str>,
    buckets: Vec<&'a str>,
    urls: Vec<Option<&'a str>>,
    secrets: Vec<Option<&'a str>>,
    owners: Vec<Option<&'a str>>,
}

/// Every fresh event and its deliveries, as columns.
fn columns<'a>(
    events: &'a Events,
    numbered: &'a Numbered,
    now_ms: u64,
) -> (EventColumns<'a>, DeliveryColumns<'a>) {
    let mut ev = EventColumns::default();
    let mut dl = DeliveryColumns::default();
    for &i in &numbered.fresh {
        let (event, targets) = &events[i];
        let id = numbered.ids[i].as_str();
        let dids: Vec<String> = targets
            .iter()
            .map(|_| delivery_id_string(new_delivery_id(now_ms)))
            .collect();
        ev.deliveries.push(format!(
            "{{{}}}",
            dids.iter()
                .map(|d| format!("\"{d}\""))
                .collect::<Vec<_>>()
                .join(",")
        ));
        for (d, t) in dids.into_iter().zip(targets) {
            dl.ids.push(d);
            dl.events.push(id);
            dl.types.push(event.event_type.as_str());
            dl.subscriptions.push(t.subscription.as_str());
            dl.buckets.push(t.bucket.as_str());
            dl.urls.push(t.adhoc.as_ref().map(|a| a.url.as_str()));
            dl.secrets.push(t.adhoc.as_ref().map(|a| a.secret.as_str()));
            dl.owners.push(event.owner.as_deref());
        }
        ev.owners.push(event.owner.as_deref());
        ev.ids.push(id);
        ev.request_ids.push(event.request_id.as_str());
        ev.statuses.push(event.status.as_str());
        ev.types.push(event.event_type.as_str());
        ev.fingerprints.push(&event.fingerprint[..]);
        ev.bodies.push(&event.body[..]);
    }
    (ev, dl)
}

impl PgStore {
    /// Stores a call's events and their deliveries: each event once, by its
    /// `(request_id, status)`; one accepted before answers as a duplicate.
    pub(super) async fn ingest_events(
        &self,
        events: Vec<(NewEvent, Vec<Target>)>,
        now_ms: u64,
    ) -> Result<Vec<Ingested>, IngestError> {
        let mut numbered = Numbered::of(&events, now_ms)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let rows = self.insert_fresh(&tx, &events, &numbered, now_ms).await?;
        // The transaction's id: the backlog count tells by it whether it saw these deliveries.
        let xid = rows
            .first()
            .and_then(|r| u64::try_from(r.get::<_, i64>(1)).ok());
        let inserted: HashSet<String> = rows.into_iter().map(|r| r.get(0)).collect();
        // The others were accepted before: the same body is a duplicate, another a conflict.
        let before: Vec<usize> = numbered
            .fresh
            .iter()
            .copied()
            .filter(|&i| !inserted.contains(&numbered.ids[i]))
            .collect();
        let known = accepted_before(&tx, &events, &mut numbered, &before).await?;
        tx.commit().await.map_err(StoreError::from)?;
        let (answers, added) = answers(&events, &numbered, &known);
        if added > 0 {
            self.unfinished.add(xid, added as u64);
            self.announce.notify_one();
        }
        Ok(answers)
    }

    /// One statement: the fresh events not accepted before, and the deliveries of those only.
    /// Returns the ids of the events inserted, each with the transaction's id.
    async fn insert_fresh(
        &self,
        tx: &Transaction<'_>,
        events: &Events,
        numbered: &Numbered,
        now_ms: u64,
    ) -> Result<Vec<Row>, StoreError> {
        let (ev, dl) = columns(events, numbered, now_ms);
        Ok(query(tx,
                &format!(
                    "WITH now AS (SELECT coalesce($15::bigint, {DB_NOW}) AS t),
                     ins AS (
                         INSERT INTO hookd_events (id, request_id, status, event_type, fingerprint, created_ms, body, deliveries, owner)
                         SELECT x.id, x.r, x.s, x.t, x.f, now.t, x.b, x.d::text[], x.o
                         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::bytea[], $7::text[], $16::text[])
                           AS x(id, r, s, t, f, b, d, o), now
                         ON CONFLICT (request_id, status) DO NOTHING
                         RETURNING id
                     ),
                     q AS (
                         INSERT INTO hookd_queue (id, event_id, event_type, subscription, bucket, adhoc_url, adhoc_secret, created_ms, due_ms, owner)
                         SELECT y.id, y.e, y.t, y.s, y.b, y.u, y.k, now.t, now.t, y.o
                         FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $17::text[])
                           AS y(id, e, t, s, b, u, k, o), now
                         WHERE y.e IN (SELECT id FROM ins)
                         RETURNING 1
                     )
                     SELECT id, pg_current_xact_id()::text::int8 FROM ins"
                ),
                &[
                    &ev.ids, &ev.request_ids, &ev.statuses, &ev.types, &ev.fingerprints,
                    &ev.bodies, &ev.deliveries,
                    &dl.ids, &dl.events, &dl.types, &dl.subscriptions, &dl.buckets, &dl.urls,
                    &dl.secrets,
                    &self.now_param(now_ms),
                    &ev.owners, &dl.owners,
                ],
            )
            .await?)
    }
}

/// Reads the events of `before` (fresh in the call, but accepted before it): each answers with
/// the stored event's id, as a duplicate, unless its body differs (a conflict). Returns their
/// number of deliveries, by index.
async fn accepted_before(
    tx: &Transaction<'_>,
    events: &Events,
    numbered: &mut Numbered,
    before: &[usize],
) -> Result<HashMap<usize, usize>, IngestError> {
    let mut known: HashMap<usize, usize> = HashMap::new();
    if before.is_empty() {
        return Ok(known);
    }
    let (r, st): (Vec<&str>, Vec<&str>) = before
        .iter()
        .map(|&i| (events[i].0.request_id.as_str(), events[i].0.status.as_str()))
        .unzip();
    let rows = query(
        tx,
        "SELECT e.request_id, e.status, e.id, e.fingerprint, cardinality(e.deliveries)
             FROM hookd_events e JOIN unnest($1::text[], $2::text[]) AS k(r, s)
             ON e.request_id = k.r AND e.status = k.s",
        &[&r, &st],
    )
    .await
    .map_err(StoreError::from)?;
    for row in rows {
        let key: (String, String) = (row.get(0), row.get(1));
        let Some(&i) = numbered.first.get(&key) else {
            continue;
        };
        let (id, fingerprint, n): (String, Vec<u8>, i32) = (row.get(2), row.get(3), row.get(4));
        if fingerprint != events[i].0.fingerprint {
            return Err(IngestError::Conflict {
                index: i,
                request_id: key.0,
                status: key.1,
                event_id: id,
            });
        }
        numbered.ids[i] = id;
        known.insert(i, usize::try_from(n).unwrap_or(0));
    }
    if before.iter().any(|i| !known.contains_key(i)) {
        // Accepted by another node between the insert and the read: retried by the client, it
        // answers as a duplicate.
        return Err(StoreError::Backend(
            "the same event was accepted concurrently; retry".to_string(),
        )
        .into());
    }
    Ok(known)
}

/// The answer to each event of the call, and how many deliveries it added.
fn answers(
    events: &Events,
    numbered: &Numbered,
    known: &HashMap<usize, usize>,
) -> (Vec<Ingested>, usize) {
    let mut added = 0;
    let answers = events
        .iter()
        .enumerate()
        .map(|(i, (event, targets))| {
            let at = numbered.first_of(event, i);
            let (deliveries, duplicate) = match known.get(&at) {
                Some(&n) => (n, true),
                None => (events[at].1.len(), at != i),
            };
            if !duplicate {
                added += targets.len();
            }
            Ingested {
                event_id: numbered.ids[at].clone(),
                deliveries,
                duplicate,
            }
        })
        .collect();
    (answers, added)
}
