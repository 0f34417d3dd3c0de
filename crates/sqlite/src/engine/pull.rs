//! Pull steps (client chapter §6): response validation and the one-transaction-per-bundle
//! apply that advances the checkpoint only together with the bundle's rows.

use oversync_protocol::hash::{self, HashRow};
use oversync_protocol::wire::{Bundle, PullResponse};
use rusqlite::Connection;

use super::push::received_key;
use super::state::{self, Attachment};
use super::{
    StepError, apply_row, begin_authoritative, commit_authoritative, delete_dirty, row_state,
};
use crate::catalog::Catalog;
use crate::error::ProtocolViolation;

const E: &str = "pull";

/// §6.2 validation of one pull response for `after`, before anything is applied. Also rejects
/// `has_more` with no bundles below the ceiling, which would loop forever, and bundles whose
/// `row_count` or `bundle_hash` does not match their rows (§12 C11).
pub(crate) fn validate(resp: &PullResponse, after: i64) -> Result<(), ProtocolViolation> {
    if resp.stable_bundle_seq < 0 || resp.stable_bundle_seq < after {
        return Err(ProtocolViolation::new(
            E,
            format!(
                "stable_bundle_seq {} is behind after_bundle_seq {after}",
                resp.stable_bundle_seq
            ),
        ));
    }
    if !resp.bundles.is_empty() && resp.stable_bundle_seq <= 0 {
        return Err(ProtocolViolation::new(
            E,
            "bundles without a stable_bundle_seq",
        ));
    }
    if resp.has_more && resp.bundles.is_empty() && after < resp.stable_bundle_seq {
        return Err(ProtocolViolation::new(E, "has_more with no bundles"));
    }
    let mut previous = after;
    for bundle in &resp.bundles {
        if bundle.bundle_seq <= previous || bundle.bundle_seq > resp.stable_bundle_seq {
            return Err(ProtocolViolation::new(
                E,
                format!("bundle_seq {} out of order", bundle.bundle_seq),
            ));
        }
        if bundle.source_id.trim().is_empty() || bundle.source_bundle_id <= 0 {
            return Err(ProtocolViolation::new(E, "bundle source must be set"));
        }
        for row in &bundle.rows {
            super::push::validate_row(E, row)?;
        }
        verify_bundle(bundle)?;
        previous = bundle.bundle_seq;
    }
    Ok(())
}

/// §12 C11: a bundle's `row_count` and `bundle_hash`, when the server sent them (the
/// reference server always does), must describe its rows. The hash is recomputed exactly as
/// the server computed it at commit (encoding chapter §3.2), so a correct server always
/// passes (§3.2.6: verification must not change behaviour against one).
fn verify_bundle(bundle: &Bundle) -> Result<(), ProtocolViolation> {
    if bundle.row_count != 0 && bundle.row_count != bundle.rows.len() as i64 {
        return Err(ProtocolViolation::new(
            E,
            format!(
                "bundle {} says row_count {} but carries {} rows",
                bundle.bundle_seq,
                bundle.row_count,
                bundle.rows.len()
            ),
        ));
    }
    if bundle.bundle_hash.is_empty() {
        return Ok(());
    }
    let digest = hash::bundle_digest(bundle.rows.iter().map(|r| HashRow {
        schema: &r.schema,
        table: &r.table,
        key: &r.key,
        op: r.op,
        row_version: r.row_version,
        payload: r.payload.as_ref().map(|p| p.get().as_bytes()),
    }))
    .map_err(|e| ProtocolViolation::new(E, format!("bundle {}: {e}", bundle.bundle_seq)))?;
    if hash::BundleHash::from_hex(&bundle.bundle_hash) != Some(digest.hash) {
        return Err(ProtocolViolation::new(
            E,
            format!(
                "bundle {} hash mismatch: server {}, recomputed {}",
                bundle.bundle_seq, bundle.bundle_hash, digest.hash
            ),
        ));
    }
    Ok(())
}

/// Rows applied per transaction when consecutive bundles are grouped (see [`apply_bundles`]).
const GROUP_ROWS: usize = 10_000;

/// Applies `bundles` in order and returns how many were applied, with the error that stopped
/// the rest, if any.
///
/// Consecutive bundles are applied in one transaction (up to [`GROUP_ROWS`] rows) rather than
/// one each: `PRAGMA defer_foreign_keys` expires every prepared statement, so each
/// transaction re-compiled the business-table statements with all their triggers, about
/// half the CPU of applying a small bundle. The guarantees of §6.3 are kept: a group commits
/// all its bundles with the checkpoint on the last, and when a group fails (for instance on
/// a deferred FK violation at COMMIT) it is rolled back and its bundles are applied one
/// transaction each, so bundles before the failing one stay applied, the checkpoint points
/// at the last of them and the error is the failing bundle's own. One difference remains: a
/// group can commit where its bundles one at a time would not, when a later bundle of the
/// group supplies a row an earlier one references under a local-only foreign key; what
/// commits is FK-consistent either way.
pub(crate) fn apply_bundles(
    conn: &mut Connection,
    catalog: &Catalog,
    bundles: &[Bundle],
) -> (usize, Result<(), StepError>) {
    let mut applied = 0;
    while applied < bundles.len() {
        let mut end = applied;
        let mut rows = 0;
        while end < bundles.len()
            && (end == applied || rows + bundles[end].rows.len() <= GROUP_ROWS)
        {
            rows += bundles[end].rows.len();
            end += 1;
        }
        let group = &bundles[applied..end];
        if group.len() > 1 {
            match apply_group(conn, catalog, group) {
                Ok(()) => {
                    applied = end;
                    continue;
                }
                // Nothing was applied, and one bundle at a time would refuse the same way.
                Err(StepError::Dirty(count)) => return (applied, Err(StepError::Dirty(count))),
                Err(_) => {}
            }
        }
        for bundle in group {
            if let Err(e) = apply_bundle(conn, catalog, bundle) {
                return (applied, Err(e));
            }
            applied += 1;
        }
    }
    (applied, Ok(()))
}

/// `bundles` in one authoritative transaction, checkpoint on the last.
fn apply_group(
    conn: &mut Connection,
    catalog: &Catalog,
    bundles: &[Bundle],
) -> Result<(), StepError> {
    let tx = begin_authoritative(conn)?;
    let dirty = state::dirty_count(&tx)?;
    if dirty > 0 {
        return Err(StepError::Dirty(dirty));
    }
    for bundle in bundles {
        apply_rows(&tx, catalog, bundle)?;
    }
    let last = bundles.last().map_or(0, |b| b.bundle_seq);
    let mut attachment = Attachment::load(&tx)?;
    attachment.last_bundle_seq_seen = attachment.last_bundle_seq_seen.max(last);
    attachment.store(&tx)?;
    commit_authoritative(tx)?;
    Ok(())
}

/// §6.3: applies one bundle in one authoritative transaction. Rows whose row state is already
/// at or above their version are skipped (e.g. this client's own replayed push). Refuses, and
/// changes nothing, if dirty rows appeared since the pull started (§12 A8).
fn apply_bundle(
    conn: &mut Connection,
    catalog: &Catalog,
    bundle: &Bundle,
) -> Result<(), StepError> {
    let tx = begin_authoritative(conn)?;
    let dirty = state::dirty_count(&tx)?;
    if dirty > 0 {
        return Err(StepError::Dirty(dirty));
    }
    apply_rows(&tx, catalog, bundle)?;
    let mut attachment = Attachment::load(&tx)?;
    attachment.last_bundle_seq_seen = attachment.last_bundle_seq_seen.max(bundle.bundle_seq);
    attachment.store(&tx)?;
    commit_authoritative(tx)?;
    Ok(())
}

/// The rows of one bundle, in order, inside an authoritative transaction.
fn apply_rows(tx: &Connection, catalog: &Catalog, bundle: &Bundle) -> Result<(), StepError> {
    for row in &bundle.rows {
        let (table, _, kj) = received_key(tx, catalog, E, &row.schema, &row.table, &row.key)?;
        if let Some((version, _)) = row_state(tx, &catalog.schema, &table.name, &kj)?
            && version >= row.row_version
        {
            continue;
        }
        let payload = row.payload.as_ref().map(|p| p.get());
        apply_row(
            tx,
            &catalog.schema,
            table,
            &kj,
            row.op,
            row.row_version,
            payload,
        )?;
        delete_dirty(tx, &catalog.schema, &table.name, &kj)?;
    }
    Ok(())
}
