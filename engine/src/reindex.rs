//! Re-embedding a database with another model (`vitrine reindex --backend …`): a new vector
//! space, filled while writers are fenced off, then made live in one transaction.
//!
//! # The protocol
//! 1. **Fence.** [`Engine::begin_reindex`] takes the one `vitrine_reindex` row named `fence` under
//!    `SELECT … FOR UPDATE`: it writes its token, the target space and its model, and the engine's
//!    clock as `started` and `heartbeat`. Another reindex holding a live fence is refused
//!    ([`EngineError::Reindexing`]). A fence is live while its heartbeat is younger than [`LEASE`];
//!    a thread renews it every [`HEARTBEAT`], only while it is still live, so a fence that lapsed
//!    once stays lost and the reindex fails ([`EngineError::ReindexLost`]) instead of switching.
//! 2. **Drain.** Every write checks the fence inside its own transaction (`check_writable`), and
//!    every session of ours runs with `ob_trx_timeout` = [`WRITE_TRX_TIMEOUT`], so the engine
//!    rolls back any write older than that. Waiting that long after taking the fence means every
//!    write that read "no fence" is committed or gone: from then on the reindex is the only writer,
//!    as `vitrine reindex` is on the embedded backend (which holds the data directory's lock).
//! 3. **Fill.** The [`Reindex::writer`] handle writes product rows (new zero-shot tags) and the new
//!    space's vectors; the live space's vectors are untouched, so every node goes on answering
//!    from them with the old model meanwhile.
//! 4. **Switch.** [`Reindex::commit`]: in one transaction under the fence's row lock, check the
//!    fence is still ours and live, then set the live space, its model and dimension, and clear
//!    the fence. New nodes (and restarted ones) then open the new space.
//!
//! The previous space's tables are kept, so nodes still running the old model go on answering
//! from them (their writes are refused with [`EngineError::Reindexed`]) until they are restarted
//! with the new model; the next reindex drops every space but the live one. A reindex that dies
//! leaves its fence to lapse (writes resume after [`LEASE`] at most) and its half-filled tables
//! to the next reindex, which drops them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::TxOpts;
use vitrine_core::ModelId;

use crate::schema::{self, Space};
use crate::{check_dim, Engine, EngineError, Result};

/// How long a fence lives without a heartbeat.
pub const LEASE: Duration = Duration::from_secs(60);
/// How often the holder renews its fence.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// The longest transaction of ours the engine lets run (`ob_trx_timeout`, set on every session):
/// one product's write takes milliseconds.
pub const WRITE_TRX_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reindex waits after taking the fence before reading anything: every write that
/// passed the fence check before it was set has committed or been rolled back by then.
pub const DRAIN: Duration = Duration::from_secs(WRITE_TRX_TIMEOUT.as_secs() + 1);

/// A live fence as a writer sees it.
#[derive(Debug, Clone)]
pub(crate) struct Fence {
    pub token: String,
    pub started_s_ago: u64,
}

/// The SQL condition under which the fence row's heartbeat is recent enough: the one definition of
/// a live fence, for writers, renewals, a new reindex and the switch alike.
fn heartbeat_is_live() -> String {
    format!("heartbeat > UNIX_TIMESTAMP() - {}", LEASE.as_secs())
}

/// The live fence (None when no reindex holds one) and the live vector space, in one statement.
pub(crate) fn write_state(conn: &mut impl Queryable) -> Result<(Option<Fence>, u32)> {
    let row: Option<(Option<String>, Option<i64>, Option<String>)> = conn
        .exec_first(
            format!(
                "SELECT
                   (SELECT token FROM vitrine_reindex WHERE name = 'fence' AND token <> '' AND {live}),
                   (SELECT UNIX_TIMESTAMP() - started FROM vitrine_reindex WHERE name = 'fence'),
                   (SELECT v FROM vitrine_meta WHERE k = 'vectors')",
                live = heartbeat_is_live()
            ),
            (),
        )
        .map_err(EngineError::sql("read the reindex fence"))?;
    let (token, age, live) = row.unwrap_or((None, None, None));
    Ok((token.map(|token| Fence { token, started_s_ago: age.unwrap_or(0).max(0) as u64 }), schema::parse_space(live)?))
}

/// The fence row under a row lock, inside `tx`: its token (empty when free), how many seconds ago
/// it was taken, and whether its heartbeat is live.
fn lock_fence(tx: &mut impl Queryable, what: &'static str) -> Result<(String, u64, bool)> {
    let (token, age, live): (String, i64, bool) = tx
        .exec_first(
            format!(
                "SELECT token, UNIX_TIMESTAMP() - started, {} FROM vitrine_reindex WHERE name = 'fence' FOR UPDATE",
                heartbeat_is_live()
            ),
            (),
        )
        .map_err(EngineError::sql(what))?
        .ok_or_else(|| EngineError::corrupt("vitrine_reindex has no fence row"))?;
    Ok((token, age.max(0) as u64, live))
}

/// A token no other reindex holds: this process, the time, and a counter.
fn new_token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{:x}-{}", std::process::id(), nanos, N.fetch_add(1, Ordering::Relaxed))
}

/// Renews the fence while it is live; true when it was.
fn renew(conn: &mut mysql::PooledConn, token: &str) -> Result<bool> {
    conn.exec_drop(
        format!(
            "UPDATE vitrine_reindex SET heartbeat = UNIX_TIMESTAMP() WHERE name = 'fence' AND token = ? AND {}",
            heartbeat_is_live()
        ),
        (token,),
    )
    .map_err(EngineError::sql("renew the reindex fence"))?;
    Ok(conn.affected_rows() == 1)
}

/// A reindex in progress: holds the fence until [`Reindex::commit`] switches over, or until it is
/// dropped (then the fence is released and the live space stays as it was).
pub struct Reindex {
    writer: Engine,
    token: Arc<str>,
    model: ModelId,
    /// The live space when the reindex began (its dimension is recorded at the switch).
    from: Space,
    stop: Option<Sender<()>>,
    beat: Option<JoinHandle<()>>,
    committed: bool,
}

impl std::fmt::Debug for Reindex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reindex({} -> space {})", self.from.n, self.writer.space.n)
    }
}

impl Engine {
    /// Starts re-embedding this database with `model`: takes the fence, drops vector spaces
    /// other than the live one (left by earlier reindexes), creates the new space's tables and
    /// waits [`DRAIN`]. See the module documentation for the protocol.
    pub fn begin_reindex(&self, model: &ModelId) -> Result<Reindex> {
        check_dim(model)?;
        let token: Arc<str> = new_token().into();
        let model_json = serde_json::to_string(model).expect("a model id serializes");
        let mut conn = self.conn()?;
        let (from, target) = {
            let mut tx = conn.start_transaction(TxOpts::default()).map_err(EngineError::sql("begin reindex"))?;
            let (holder, age, live_fence) = lock_fence(&mut tx, "take the reindex fence")?;
            if !holder.is_empty() && live_fence {
                return Err(EngineError::Reindexing { started_s_ago: age });
            }
            let live = schema::live_space(&mut tx)?;
            let target = live.checked_add(1).ok_or_else(|| EngineError::corrupt("vector space numbers are exhausted"))?;
            tx.exec_drop(
                "UPDATE vitrine_reindex SET token = ?, space = ?, model = ?, started = UNIX_TIMESTAMP(),
                 heartbeat = UNIX_TIMESTAMP() WHERE name = 'fence'",
                (&*token, target, &model_json),
            )
            .map_err(EngineError::sql("take the reindex fence"))?;
            tx.commit().map_err(EngineError::sql("take the reindex fence"))?;
            (Space::new(live), Space::new(target))
        };
        let (stop, rx) = mpsc::channel::<()>();
        let beat = {
            let (engine, token) = (self.clone(), token.clone());
            std::thread::Builder::new()
                .name("reindex-fence".into())
                .spawn(move || loop {
                    match rx.recv_timeout(HEARTBEAT) {
                        Err(RecvTimeoutError::Timeout) => {
                            // A failed renewal is retried at the next beat; a fence that lapsed
                            // cannot be renewed, and the switch then refuses.
                            match engine.conn().and_then(|mut c| renew(&mut c, &token)) {
                                Ok(true) => {}
                                Ok(false) => {
                                    tracing::error!("the reindex fence lapsed: this reindex will not switch over");
                                    return;
                                }
                                Err(e) => tracing::warn!("renewing the reindex fence: {e}"),
                            }
                        }
                        _ => return,
                    }
                })
                .map_err(|e| EngineError::invalid(format!("cannot start the fence heartbeat: {e}")))?
        };
        let writer = Engine { space: Arc::new(target.clone()), fence: Some(token.clone()), ..self.clone() };
        let r = Reindex { writer, token, model: model.clone(), from, stop: Some(stop), beat: Some(beat), committed: false };
        // From here on, dropping `r` releases the fence.
        let tables: Vec<String> = conn.query("SHOW TABLES").map_err(EngineError::sql("list tables"))?;
        for t in tables.iter().filter(|t| Space::of_table(t).is_some_and(|n| n != r.from.n)) {
            tracing::info!(table = %t, "dropping a vector table of an earlier vector space");
            conn.query_drop(format!("DROP TABLE IF EXISTS {t}")).map_err(EngineError::sql("drop an old vector space"))?;
        }
        for sql in target.create_tables(model.dim) {
            conn.query_drop(sql).map_err(EngineError::sql("create the new vector space"))?;
        }
        schema::write_meta(&mut conn, &target.dim_key(), &model.dim.to_string())?;
        tracing::info!(from = r.from.n, to = target.n, "reindex fence taken; waiting {DRAIN:?} for writes in flight");
        std::thread::sleep(DRAIN);
        Ok(r)
    }
}

impl Reindex {
    /// The handle that writes the new space: `put` writes a product's row and its new vectors
    /// (refused once the fence is lost); `get` sees only products already written into the new
    /// space, so an ingest through it re-embeds each product once.
    pub fn writer(&self) -> &Engine {
        &self.writer
    }

    /// The vector space being filled.
    pub fn target(&self) -> u32 {
        self.writer.space.n
    }

    /// Makes the new space live, with its model, in one transaction, if the fence is still ours.
    pub fn commit(mut self) -> Result<()> {
        let mut conn = self.writer.conn()?;
        let mut tx = conn.start_transaction(TxOpts::default()).map_err(EngineError::sql("begin the switch"))?;
        let (holder, _, live_fence) = lock_fence(&mut tx, "switch")?;
        if holder != *self.token || !live_fence {
            return Err(EngineError::ReindexLost);
        }
        // Nodes still on the old space read its dimension under its own key.
        if let Some(old_dim) = schema::space_dim(&mut tx, &self.from)? {
            schema::write_meta(&mut tx, &self.from.dim_key(), &old_dim.to_string())?;
        }
        let target = &self.writer.space;
        schema::write_meta(&mut tx, &target.dim_key(), &self.model.dim.to_string())?;
        schema::write_meta(&mut tx, "vector_dim", &self.model.dim.to_string())?;
        schema::write_meta(&mut tx, "model", &serde_json::to_string(&self.model).expect("a model id serializes"))?;
        schema::write_meta(&mut tx, "vectors", &target.n.to_string())?;
        tx.exec_drop("UPDATE vitrine_reindex SET token = '' WHERE name = 'fence'", ()).map_err(EngineError::sql("switch"))?;
        tx.commit().map_err(EngineError::sql("commit the switch"))?;
        self.committed = true;
        tracing::info!(from = self.from.n, to = target.n, model = %self.model.name, "reindex switched over");
        Ok(())
    }
}

impl Drop for Reindex {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(b) = self.beat.take() {
            let _ = b.join();
        }
        if !self.committed {
            // Release the fence at once rather than after the lease; the half-filled space is
            // dropped by the next reindex.
            let released = self.writer.conn().and_then(|mut c| {
                c.exec_drop("UPDATE vitrine_reindex SET token = '' WHERE name = 'fence' AND token = ?", (&*self.token,))
                    .map_err(EngineError::sql("release the reindex fence"))
            });
            if let Err(e) = released {
                tracing::warn!("releasing the reindex fence (it lapses after {LEASE:?} anyway): {e}");
            }
        }
    }
}
