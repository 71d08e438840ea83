//! The engine backend's access layer: Vitrine's products, vectors, full text and filters kept in
//! OceanBase (tested against seekdb, its single-node engine), so that Vitrine nodes are stateless.
//!
//! [`Engine`] is the whole interface: writes (`put`, `delete`, counters), reads (`get`, `ids`,
//! vectors) and the query channels the searcher fuses (`vector_channel`, `keyword_channel`,
//! `count_matching`). The schema and its migrations are in [`schema`], with the partitioning
//! meant for a cluster; the URL form in [`EngineUrl`].
//!
//! # Invariants
//! - Every client-provided string (ids, filter values, attribute keys, keyword text, vectors) is
//!   a bound parameter; the only identifier formatted into SQL is the database name, which
//!   [`EngineUrl`] restricts to `^[A-Za-z_][A-Za-z0-9_]{0,63}$`. Numbers formatted into SQL
//!   (`LIMIT`, the vector dimension) are integers of ours.
//! - A product's row, attributes and vectors change in one transaction (`put`, `delete`).
//! - Ords and sequence numbers come from counter rows read `FOR UPDATE` inside a transaction,
//!   so several writers (nodes) never hand out the same one; ords are never reused.
//! - Scores are cosine similarities (`1 - cosine_distance`) for the vector channels and the
//!   engine's `MATCH … AGAINST` relevance for the keyword channel.
//!
//! # Threading and bounded time
//! [`Engine`] is `Send + Sync` and cheap to clone: it holds a connection pool of at most
//! [`POOL_MAX`] connections. Taking a connection waits at most [`POOL_WAIT`]; connecting at most
//! [`CONNECT_TIMEOUT`]; a read or write on the socket at most [`IO_TIMEOUT`].

mod backend;
mod error;
pub mod reindex;
pub mod schema;
mod url;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{OptsBuilder, Pool, PoolConstraints, PoolOpts, PooledConn, TxOpts, Value};
use vitrine_core::catalog::{ProductWrite, StoredProduct};
use vitrine_core::filters::MAX_FILTER_VALUE_BYTES;
use vitrine_core::{Filters, ModelId};

pub use backend::Backend;
pub use error::EngineError;
pub use reindex::Reindex;
use schema::Space;
pub use url::{is_identifier, EngineUrl, MAX_URL_BYTES};

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Connections one [`Engine`] (and its clones) keeps open at most.
pub const POOL_MAX: usize = 8;
/// How long taking a connection from the pool may wait.
pub const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one socket read or write may block (a query's answer included).
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest keyword query, in characters.
pub const MAX_KEYWORD_CHARS: usize = 1000;
/// Most jobs one listing returns.
pub const MAX_JOBS_LISTED: usize = 1_000;
/// The image channel fetches `k * IMAGE_OVERSAMPLE` image points from the ANN index before keeping
/// each product's best one, and fetches again with four times as many while fewer than `k`
/// distinct products came back from a full answer (twice at most: up to `48 k` points).
pub const IMAGE_OVERSAMPLE: usize = 3;

/// MySQL's "unknown database" error code.
const ER_BAD_DB_ERROR: u16 = 1049;
/// MySQL's "duplicate key" error code.
const ER_DUP_ENTRY: u16 = 1062;

/// Which vector table a query searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorChannel {
    Image,
    Text,
}

/// How a database's full-text columns hold text, fixed when it is created (schema version 4,
/// `vitrine_meta.text_analysis`); writes and keyword queries go through the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextAnalysis {
    /// As written (databases that held products before schema version 4).
    Raw,
    /// The keyword index's analyzed terms ([`vitrine_store::keyword::stemmed_terms`]).
    Stemmed,
}

impl TextAnalysis {
    fn apply(self, t: &str) -> std::borrow::Cow<'_, str> {
        match self {
            TextAnalysis::Raw => t.into(),
            TextAnalysis::Stemmed => vitrine_store::keyword::stemmed_terms(t).into(),
        }
    }
}

/// What [`Engine::counts`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub products: u64,
    pub image_vectors: u64,
    pub text_vectors: u64,
}

/// A handle on one Vitrine database in the engine, reading and writing one vector space: the
/// live one when it connected. After a reindex switched to another space, the handle goes on
/// answering from its own (kept until the next reindex) and its writes are refused
/// ([`EngineError::Reindexed`]), so a node is restarted with the new model at its own pace.
#[derive(Clone)]
pub struct Engine {
    url: Arc<EngineUrl>,
    pool: Pool,
    space: Arc<Space>,
    /// The reindex this handle writes for (its fence token); None for every other handle.
    fence: Option<Arc<str>>,
    analysis: TextAnalysis,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({})", self.url)
    }
}

fn opts(url: &EngineUrl, database: Option<&str>) -> OptsBuilder {
    OptsBuilder::new()
        .ip_or_hostname(Some(url.host.clone()))
        .tcp_port(url.port)
        .user(Some(url.user.clone()))
        .pass(url.password().map(str::to_string))
        .db_name(database.map(str::to_string))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(CONNECT_TIMEOUT))
        .read_timeout(Some(IO_TIMEOUT))
        .write_timeout(Some(IO_TIMEOUT))
        // The engine rolls back any transaction of ours older than this: what lets a reindex know
        // when writes that passed its fence check before it was set are over (reindex::drain).
        .init(vec![format!("SET SESSION ob_trx_timeout = {}", reindex::WRITE_TRX_TIMEOUT.as_micros())])
}

/// A model dimension the vector tables can hold.
fn check_dim(m: &ModelId) -> Result<()> {
    if m.dim == 0 || m.dim > 16_000 {
        return Err(EngineError::invalid(format!("model dimension {} is outside 1..=16000", m.dim)));
    }
    Ok(())
}

/// `[a,b,c]`: the engine's vector literal, bound as a string parameter.
fn vector_literal(v: &[f32]) -> Result<String> {
    if v.iter().any(|x| !x.is_finite()) {
        return Err(EngineError::invalid("a vector holds a NaN or an infinity"));
    }
    let mut s = String::with_capacity(v.len() * 12 + 2);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&x.to_string());
    }
    s.push(']');
    Ok(s)
}

/// A stored vector as the engine returns it: its text form `[a,b,…]`, or packed little-endian f32.
fn parse_vector(b: &[u8]) -> Result<Vec<f32>> {
    if b.first() == Some(&b'[') {
        let s = std::str::from_utf8(b).map_err(|_| EngineError::corrupt("a vector is not UTF-8"))?;
        let inner = s
            .trim()
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .ok_or_else(|| EngineError::corrupt("a vector is not [..]"))?;
        if inner.trim().is_empty() {
            return Ok(vec![]);
        }
        inner
            .split(',')
            .map(|x| x.trim().parse::<f32>().map_err(|_| EngineError::corrupt(format!("vector element {x:?}"))))
            .collect()
    } else if b.len().is_multiple_of(4) {
        Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    } else {
        Err(EngineError::corrupt(format!("a vector of {} bytes", b.len())))
    }
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// A value stored in a filter column: NULL when longer than any filter value can be.
fn filter_value(v: Option<&str>) -> Value {
    match v {
        Some(v) if v.len() <= MAX_FILTER_VALUE_BYTES => Value::Bytes(v.as_bytes().to_vec()),
        _ => Value::NULL,
    }
}

/// The conditions of `f` (and the excluded id) on `products p`, as `AND …` clauses with their
/// bound parameters appended to `params`. Semantics as the embedded index's filter query: keys
/// ANDed, values within a key ORed, exact byte match; price bounds inclusive (a product without
/// a price matches no price filter); attributes match the catalog's and the zero-shot tags alike.
fn filter_clauses(f: &Filters, exclude: Option<&str>, params: &mut Vec<Value>) -> Result<String> {
    f.validate().map_err(EngineError::invalid)?;
    let mut sql = String::new();
    let mut any_of = |column: &str, values: &[String], sql: &mut String| {
        if values.is_empty() {
            return;
        }
        sql.push_str(&format!(" AND p.{column} IN ({})", placeholders(values.len())));
        params.extend(values.iter().map(|v| Value::Bytes(v.as_bytes().to_vec())));
    };
    any_of("category", &f.category, &mut sql);
    any_of("brand", &f.brand, &mut sql);
    if let Some(p) = f.price {
        if let Some(lo) = p.min {
            sql.push_str(" AND p.price >= ?");
            params.push(Value::Double(lo));
        }
        if let Some(hi) = p.max {
            sql.push_str(" AND p.price <= ?");
            params.push(Value::Double(hi));
        }
    }
    for (k, values) in &f.attributes {
        if values.is_empty() {
            continue;
        }
        // An uncorrelated `IN (subquery)`, not a correlated `EXISTS`: seekdb 1.4 answered an
        // APPROXIMATE query whose filter had a correlated EXISTS with rows failing it (see the
        // `filters_apply_inside_retrieval` test).
        sql.push_str(&format!(
            " AND p.ord IN (SELECT a.ord FROM product_attributes a WHERE a.k = ? AND a.v IN ({}))",
            placeholders(values.len())
        ));
        params.push(Value::Bytes(k.as_bytes().to_vec()));
        params.extend(values.iter().map(|v| Value::Bytes(v.as_bytes().to_vec())));
    }
    if let Some(id) = exclude {
        sql.push_str(" AND p.id <> ?");
        params.push(Value::Bytes(id.as_bytes().to_vec()));
    }
    Ok(sql)
}

fn check_keyword_text(text: &str) -> Result<Option<&str>> {
    if text.chars().count() > MAX_KEYWORD_CHARS {
        return Err(EngineError::invalid(format!("keyword text is longer than {MAX_KEYWORD_CHARS} characters")));
    }
    let t = text.trim();
    Ok((!t.is_empty()).then_some(t))
}

/// Whether a product matches keyword text (one `?`).
const MATCH_ANY: &str = "MATCH(p.title, p.description, p.brand_text, p.category_text, p.attr_text) AGAINST(?)";

/// A keyword match's score (three `?`, the same text), weighting the fields as the embedded
/// keyword index does (title 3, brand and category 2, description and attributes 1): every field
/// counts once through the all-fields index, the title twice more through its own index, brand
/// and category once more through theirs.
const KEYWORD_SCORE: &str = "(MATCH(p.title, p.description, p.brand_text, p.category_text, p.attr_text) AGAINST(?) \
     + 2 * MATCH(p.title) AGAINST(?) + MATCH(p.brand_text, p.category_text) AGAINST(?))";

/// Title-dictionary probes one keyword query may make for typo tolerance (about five typical
/// words: a 9-letter one has ~700 strings one edit away); at most 4 lookups of 1,000 keys.
pub const MAX_TYPO_PROBES: usize = 4_000;

/// The longest term the title dictionary keeps (`title_terms.term`; the analyzers drop words
/// over 40 bytes anyway).
const MAX_TERM_BYTES: usize = 160;

/// The longest text kept in a full-text column (a `TEXT` holds 65,535 bytes); the whole text
/// stays in `doc`.
const MAX_INDEXED_TEXT_BYTES: usize = 65_000;

fn indexed_text(t: Option<&str>) -> Value {
    let Some(t) = t else { return Value::NULL };
    let mut end = t.len().min(MAX_INDEXED_TEXT_BYTES);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    Value::from(&t[..end])
}

fn decode_doc(doc: &str) -> Result<StoredProduct> {
    serde_json::from_str(doc).map_err(|e| EngineError::corrupt(format!("products.doc: {e}")))
}

/// Keeps each ord's best similarity, best first, at most `k`.
fn best_per_product(hits: impl IntoIterator<Item = (u64, f64)>, k: usize) -> Vec<(u64, f32)> {
    let mut best: HashMap<u64, f64> = HashMap::new();
    for (ord, d) in hits {
        let e = best.entry(ord).or_insert(f64::INFINITY);
        *e = e.min(d);
    }
    let mut v: Vec<(u64, f32)> = best.into_iter().map(|(o, d)| (o, (1.0 - d) as f32)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v
}

/// One attempt at [`Engine::put`]'s transaction (`literals`: the image vectors' then the text
/// vector's, validated; `vector_tables`: whether they exist).
fn put_once(e: &Engine, conn: &mut PooledConn, w: &ProductWrite, literals: &[String], vector_tables: bool) -> Result<()> {
    let s = &w.stored;
    let p = &s.product;
    let doc = serde_json::to_string(s).expect("a product serializes");
    let attr_text: Vec<String> = p.attributes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let attrs: Vec<(&String, &String)> =
        s.all_attributes().filter(|(k, v)| k.len() <= MAX_FILTER_VALUE_BYTES && v.len() <= MAX_FILTER_VALUE_BYTES).collect();

    let mut tx = conn.start_transaction(TxOpts::default()).map_err(EngineError::sql("begin put"))?;
    e.check_writable(&mut tx)?;
    let owner: Option<Vec<u8>> =
        tx.exec_first("SELECT id FROM products WHERE ord = ? FOR UPDATE", (s.ord,)).map_err(EngineError::sql("put"))?;
    if owner.as_ref().is_some_and(|o| o != p.id.as_bytes()) {
        return Err(EngineError::invalid(format!("ord {} belongs to another product than {:?}", s.ord, p.id)));
    }
    // The same id under another ord (an ord not from ordinal_for) is replaced wholesale.
    let old_ord: Option<u64> =
        tx.exec_first("SELECT ord FROM products WHERE id = ? FOR UPDATE", (p.id.as_bytes(),)).map_err(EngineError::sql("put"))?;
    for ord in [Some(s.ord), old_ord].into_iter().flatten() {
        for t in e.row_tables(vector_tables) {
            tx.exec_drop(format!("DELETE FROM {t} WHERE ord = ?"), (ord,)).map_err(EngineError::sql("put: clear"))?;
        }
    }
    let opt_text = |t: &Option<String>| indexed_text(t.as_deref().map(|t| e.analysis.apply(t)).as_deref());
    tx.exec_drop(
        "INSERT INTO products (ord, id, version, hash, category, brand, price, title, description, brand_text, category_text, attr_text, doc)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            Value::from(s.ord),
            Value::Bytes(p.id.as_bytes().to_vec()),
            Value::from(s.version),
            Value::from(s.hash.as_str()),
            filter_value(p.category.as_deref()),
            filter_value(p.brand.as_deref()),
            p.price.filter(|x| x.is_finite()).map(Value::Double).unwrap_or(Value::NULL),
            opt_text(&p.title),
            opt_text(&p.description),
            opt_text(&p.brand),
            opt_text(&p.category),
            if attr_text.is_empty() { Value::NULL } else { indexed_text(Some(&e.analysis.apply(&attr_text.join("\n")))) },
            Value::from(doc),
        ],
    )
    .map_err(EngineError::sql("put: product"))?;
    if !attrs.is_empty() {
        let mut params = Vec::with_capacity(attrs.len() * 3);
        for (k, v) in &attrs {
            params.extend([Value::from(s.ord), Value::Bytes(k.as_bytes().to_vec()), Value::Bytes(v.as_bytes().to_vec())]);
        }
        let rows = vec!["(?, ?, ?)"; attrs.len()].join(", ");
        tx.exec_drop(format!("INSERT INTO product_attributes (ord, k, v) VALUES {rows}"), params)
            .map_err(EngineError::sql("put: attributes"))?;
    }
    let n_images = w.image_vectors.len();
    if n_images > 0 {
        let mut params = Vec::with_capacity(n_images * 3);
        for (slot, lit) in literals[..n_images].iter().enumerate() {
            params.extend([Value::from(s.ord), Value::from(slot as u64), Value::from(lit.as_str())]);
        }
        let rows = vec!["(?, ?, ?)"; n_images].join(", ");
        tx.exec_drop(format!("INSERT INTO {} (ord, slot, vec) VALUES {rows}", e.space.image), params)
            .map_err(EngineError::sql("put: image vectors"))?;
    }
    if let Some(lit) = literals.get(n_images) {
        tx.exec_drop(format!("INSERT INTO {} (ord, vec) VALUES (?, ?)", e.space.text), (s.ord, lit.as_str()))
            .map_err(EngineError::sql("put: text vector"))?;
    }
    tx.commit().map_err(EngineError::sql("commit put"))
}

impl Engine {
    /// Connects, creates the database when missing and migrates its schema.
    pub fn connect(url: &EngineUrl) -> Result<Engine> {
        let connect_err = |e: mysql::Error| EngineError::Connect { url: url.to_string(), message: e.to_string() };
        // The database may not exist yet: then create it over a connection without one (a
        // database that exists is used as it is, so a user with rights on it alone will do).
        // Its name passed `is_identifier`, so quoting it with backticks is safe.
        debug_assert!(is_identifier(&url.database));
        match mysql::Conn::new(opts(url, Some(&url.database))) {
            Ok(_) => {}
            Err(mysql::Error::MySqlError(e)) if e.code == ER_BAD_DB_ERROR => {
                let mut bootstrap = mysql::Conn::new(opts(url, None)).map_err(connect_err)?;
                bootstrap
                    .query_drop(format!("CREATE DATABASE IF NOT EXISTS `{}` DEFAULT CHARACTER SET utf8mb4", url.database))
                    .map_err(EngineError::sql("create database"))?;
            }
            Err(e) => return Err(connect_err(e)),
        }
        let constraints = PoolConstraints::new(0, POOL_MAX).expect("0 <= POOL_MAX");
        // No COM_RESET_CONNECTION between uses: the engine keeps no session state of ours.
        let pool_opts = PoolOpts::default().with_constraints(constraints).with_reset_connection(false);
        let pool = Pool::new(opts(url, Some(&url.database)).pool_opts(pool_opts)).map_err(connect_err)?;
        let mut engine =
            Engine { url: Arc::new(url.clone()), pool, space: Arc::new(Space::new(0)), fence: None, analysis: TextAnalysis::Raw };
        let mut conn = engine.conn()?;
        schema::migrate(&mut conn, &url.database)?;
        engine.space = Arc::new(Space::new(schema::live_space(&mut conn)?));
        engine.analysis = match schema::read_meta(&mut conn, "text_analysis")?.as_deref() {
            Some("stemmed") => TextAnalysis::Stemmed,
            Some("raw") => TextAnalysis::Raw,
            other => return Err(EngineError::corrupt(format!("vitrine_meta.text_analysis is {other:?}"))),
        };
        Ok(engine)
    }

    /// How this database's full-text columns hold text.
    pub fn text_analysis(&self) -> TextAnalysis {
        self.analysis
    }

    pub fn url(&self) -> &EngineUrl {
        &self.url
    }

    fn conn(&self) -> Result<PooledConn> {
        self.pool.try_get_conn(POOL_WAIT).map_err(|e| EngineError::Connect { url: self.url.to_string(), message: e.to_string() })
    }

    /// The vector space this handle reads and writes.
    pub fn space(&self) -> u32 {
        self.space.n
    }

    /// Every table with rows of one product (by `ord`) in this handle's view; the vector tables,
    /// last, exist once a model is recorded.
    fn row_tables(&self, vector_tables: bool) -> Vec<&str> {
        let mut t = vec!["products", "product_attributes"];
        if vector_tables {
            t.extend([self.space.image.as_str(), self.space.text.as_str()]);
        }
        t
    }

    /// Refuses a write (inside its transaction) while a reindex holds the fence, and once the
    /// database switched to another vector space than this handle's; a reindex's own writer is
    /// refused once its fence is gone. The check runs in the write's transaction, which the
    /// engine rolls back after [`reindex::WRITE_TRX_TIMEOUT`]: a reindex that waited that long
    /// after taking the fence sees every write that passed this check.
    fn check_writable(&self, tx: &mut impl Queryable) -> Result<()> {
        let (fence, live) = reindex::write_state(tx)?;
        match (&self.fence, fence) {
            (Some(mine), Some(f)) if **mine == *f.token => Ok(()),
            (Some(_), _) => Err(EngineError::ReindexLost),
            (None, Some(f)) => Err(EngineError::Reindexing { started_s_ago: f.started_s_ago }),
            (None, None) if live == self.space.n => Ok(()),
            (None, None) => Err(EngineError::Reindexed { live, mine: self.space.n }),
        }
    }

    pub fn schema_version(&self) -> Result<u32> {
        schema::read_version(&mut self.conn()?)
    }

    /// The model of the live vector space.
    pub fn model(&self) -> Result<Option<ModelId>> {
        match schema::read_meta(&mut self.conn()?, "model")? {
            None => Ok(None),
            Some(j) => serde_json::from_str(&j).map(Some).map_err(|e| EngineError::corrupt(format!("vitrine_meta.model: {e}"))),
        }
    }

    /// The dimension of this handle's vector tables (None before its model is recorded).
    fn vector_dim(&self, conn: &mut impl Queryable) -> Result<Option<usize>> {
        schema::space_dim(conn, &self.space)
    }

    /// Records the model of a database's first vector space and creates its tables when absent.
    /// A model of another dimension is refused while vectors are stored; over empty vector tables
    /// it replaces them. Another model for a database with vectors is `vitrine reindex`'s
    /// ([`Engine::begin_reindex`]).
    pub fn set_model(&self, m: &ModelId) -> Result<()> {
        check_dim(m)?;
        let mut conn = self.conn()?;
        if let Some(dim) = self.vector_dim(&mut conn)? {
            if dim != m.dim {
                let Space { image, text, .. } = &*self.space;
                let stored: u64 = conn
                    .query_first(format!("SELECT (SELECT COUNT(*) FROM {image}) + (SELECT COUNT(*) FROM {text})"))
                    .map_err(EngineError::sql("count vectors"))?
                    .unwrap_or(0);
                if stored > 0 {
                    return Err(EngineError::Dimension {
                        message: format!(
                            "the database holds {stored} vectors of dimension {dim}; model {} has dimension {}: `vitrine reindex` re-embeds them",
                            m.name, m.dim
                        ),
                    });
                }
                for t in [image, text] {
                    conn.query_drop(format!("DROP TABLE IF EXISTS {t}")).map_err(EngineError::sql("drop vector table"))?;
                }
            }
        }
        for sql in self.space.create_tables(m.dim) {
            conn.query_drop(sql).map_err(EngineError::sql("create vector table"))?;
        }
        schema::write_meta(&mut conn, &self.space.dim_key(), &m.dim.to_string())?;
        schema::write_meta(&mut conn, "vector_dim", &m.dim.to_string())?;
        let json = serde_json::to_string(m).expect("a model id serializes");
        schema::write_meta(&mut conn, "model", &json)
    }

    fn require_dim(&self, conn: &mut impl Queryable) -> Result<usize> {
        self.vector_dim(conn)?.ok_or(EngineError::NoModel)
    }

    /// The product `id`. A reindex's writer sees only the products it has written into its new
    /// vector space, so ingest re-embeds each of them exactly once.
    pub fn get(&self, id: &str) -> Result<Option<StoredProduct>> {
        let mut conn = self.conn()?;
        let doc: Option<String> = match self.fence {
            None => conn.exec_first("SELECT doc FROM products WHERE id = ?", (id.as_bytes(),)),
            Some(_) => {
                let Space { image, text, .. } = &*self.space;
                conn.exec_first(
                    format!(
                        "SELECT p.doc FROM products p WHERE p.id = ?
                         AND (p.ord IN (SELECT ord FROM {image}) OR p.ord IN (SELECT ord FROM {text}))"
                    ),
                    (id.as_bytes(),),
                )
            }
        }
        .map_err(EngineError::sql("get"))?;
        doc.map(|d| decode_doc(&d)).transpose()
    }

    /// Writes a product in one transaction: its row, its attributes, its image vectors (slots
    /// `0..n`, older slots removed) and its text vector.
    pub fn put(&self, w: &ProductWrite) -> Result<()> {
        let s = &w.stored;
        let p = &s.product;
        if p.id.is_empty() || p.id.len() > 512 {
            return Err(EngineError::invalid("a product id must be 1..=512 bytes"));
        }
        if w.image_vectors.len() > u16::MAX as usize {
            return Err(EngineError::invalid("too many image vectors"));
        }
        let mut conn = self.conn()?;
        // The vector tables exist once a model is recorded; a product without vectors may be
        // written before that.
        let tables_dim = self.vector_dim(&mut conn)?;
        let has_vectors = !w.image_vectors.is_empty() || w.text_vector.is_some();
        let dim = if has_vectors { Some(tables_dim.ok_or(EngineError::NoModel)?) } else { None };
        let mut literals = Vec::with_capacity(w.image_vectors.len());
        for v in w.image_vectors.iter().chain(w.text_vector.as_ref()) {
            if Some(v.len()) != dim {
                return Err(EngineError::Dimension {
                    message: format!(
                        "product {:?}: a vector of length {} for a model of dimension {}",
                        p.id,
                        v.len(),
                        dim.unwrap_or(0)
                    ),
                });
            }
            literals.push(vector_literal(v)?);
        }
        // Two first writes of one product race past `SELECT … FOR UPDATE` (there is no row to
        // lock yet) and the second insert meets the first's key: run it again, now against the
        // row, which serializes the two.
        let mut attempt = 0;
        loop {
            match put_once(self, &mut conn, w, &literals, tables_dim.is_some()) {
                Err(EngineError::Sql { source: mysql::Error::MySqlError(e), .. }) if e.code == ER_DUP_ENTRY && attempt < 3 => {
                    attempt += 1;
                }
                Ok(()) => break,
                r => return r,
            }
        }
        // The title's terms join the typo dictionary after the product's own transaction (a term
        // that lags a moment only delays typo matches of it; one that outlives its titles
        // matches nothing). Sorted, so concurrent writers take the rows in one order.
        let mut terms = vitrine_store::keyword::raw_terms(p.title.as_deref().unwrap_or(""));
        terms.retain(|t| t.len() <= MAX_TERM_BYTES);
        terms.sort();
        if !terms.is_empty() {
            let sql = format!("INSERT IGNORE INTO title_terms (term) VALUES {}", vec!["(?)"; terms.len()].join(", "));
            let params: Vec<Value> = terms.iter().map(|t| Value::Bytes(t.as_bytes().to_vec())).collect();
            conn.exec_drop(sql, params).map_err(EngineError::sql("put: title terms"))?;
        }
        Ok(())
    }

    /// The query words with no title term that are one edit from some title terms, and those
    /// terms: the typo tolerance of the embedded keyword index (`FuzzyTermQuery` at distance 1
    /// on the raw title, for the same words: [`vitrine_store::keyword::typo_candidates`]), done
    /// by probing the title dictionary with every string one edit away.
    fn typo_terms(&self, conn: &mut PooledConn, text: &str) -> Result<Vec<String>> {
        let words = vitrine_store::keyword::typo_candidates(text);
        if words.is_empty() {
            return Ok(vec![]);
        }
        let known = |conn: &mut PooledConn, probe: &[String]| -> Result<Vec<String>> {
            let mut found = vec![];
            for chunk in probe.chunks(1000) {
                let sql = format!("SELECT term FROM title_terms WHERE term IN ({})", placeholders(chunk.len()));
                let params: Vec<Value> = chunk.iter().map(|t| Value::Bytes(t.as_bytes().to_vec())).collect();
                let rows: Vec<Vec<u8>> = conn.exec(sql, params).map_err(EngineError::sql("typo terms"))?;
                found.extend(rows.into_iter().filter_map(|b| String::from_utf8(b).ok()));
            }
            Ok(found)
        };
        let present = known(conn, &words)?;
        let mut out = vec![];
        // Probes are bounded per query, not only per word: a query of long words in many scripts
        // would otherwise cost dozens of lookups. Words past the budget get no typo tolerance.
        let mut budget = MAX_TYPO_PROBES;
        for w in words.iter().filter(|w| !present.contains(w)) {
            let near: Vec<String> =
                vitrine_store::keyword::one_edit_away(w).into_iter().filter(|t| t.len() <= MAX_TERM_BYTES).collect();
            if near.len() > budget {
                break;
            }
            budget -= near.len();
            out.extend(known(conn, &near)?);
        }
        Ok(out)
    }

    /// Removes a product, its attributes and vectors in one transaction; false when absent.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let mut conn = self.conn()?;
        let mut tx = conn.start_transaction(TxOpts::default()).map_err(EngineError::sql("begin delete"))?;
        let ord: Option<u64> = tx
            .exec_first("SELECT ord FROM products WHERE id = ? FOR UPDATE", (id.as_bytes(),))
            .map_err(EngineError::sql("delete"))?;
        let Some(ord) = ord else {
            tx.rollback().map_err(EngineError::sql("delete"))?;
            return Ok(false);
        };
        self.check_writable(&mut tx)?;
        let has_vectors = self.vector_dim(&mut tx)?.is_some();
        for t in self.row_tables(has_vectors) {
            tx.exec_drop(format!("DELETE FROM {t} WHERE ord = ?"), (ord,)).map_err(EngineError::sql("delete"))?;
        }
        tx.commit().map_err(EngineError::sql("commit delete"))?;
        Ok(true)
    }

    /// Record an ingest job's status (JSON) under its id, replacing the last one.
    pub fn put_job(&self, id: &str, created_at: u64, doc: &str) -> Result<()> {
        self.conn()?
            .exec_drop(
                "INSERT INTO vitrine_jobs (id, created_at, doc) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE doc = VALUES(doc)",
                (id, created_at, doc),
            )
            .map_err(EngineError::sql("put job"))
    }

    /// A job's status as recorded by the node that runs it.
    pub fn job(&self, id: &str) -> Result<Option<String>> {
        self.conn()?.exec_first("SELECT doc FROM vitrine_jobs WHERE id = ?", (id,)).map_err(EngineError::sql("job"))
    }

    /// The newest `limit` jobs' statuses, newest first.
    pub fn jobs(&self, limit: usize) -> Result<Vec<String>> {
        let limit = limit.min(MAX_JOBS_LISTED);
        self.conn()?
            .query(format!("SELECT doc FROM vitrine_jobs ORDER BY created_at DESC, id DESC LIMIT {limit}"))
            .map_err(EngineError::sql("jobs"))
    }

    pub fn ids(&self) -> Result<Vec<String>> {
        let rows: Vec<Vec<u8>> = self.conn()?.query("SELECT id FROM products ORDER BY ord").map_err(EngineError::sql("ids"))?;
        rows.into_iter().map(|b| String::from_utf8(b).map_err(|_| EngineError::corrupt("a product id is not UTF-8"))).collect()
    }

    /// Products, image vectors and text vectors in this handle's vector space, in one statement.
    pub fn counts(&self) -> Result<Counts> {
        let mut conn = self.conn()?;
        if self.vector_dim(&mut conn)?.is_none() {
            return Ok(Counts { products: self.product_count()?, image_vectors: 0, text_vectors: 0 });
        }
        let Space { image, text, .. } = &*self.space;
        let (products, image_vectors, text_vectors): (u64, u64, u64) = conn
            .query_first(format!(
                "SELECT (SELECT COUNT(*) FROM products), (SELECT COUNT(*) FROM {image}), (SELECT COUNT(*) FROM {text})"
            ))
            .map_err(EngineError::sql("counts"))?
            .unwrap_or((0, 0, 0));
        Ok(Counts { products, image_vectors, text_vectors })
    }

    pub fn product_count(&self) -> Result<u64> {
        let n: Option<u64> = self.conn()?.query_first("SELECT COUNT(*) FROM products").map_err(EngineError::sql("count"))?;
        Ok(n.unwrap_or(0))
    }

    /// The next value of a counter row, under a row lock: safe with any number of writers.
    fn next_counter(&self, name: &'static str) -> Result<u64> {
        let mut conn = self.conn()?;
        let mut tx = conn.start_transaction(TxOpts::default()).map_err(EngineError::sql("begin counter"))?;
        let last: u64 = tx
            .exec_first("SELECT value FROM vitrine_counters WHERE name = ? FOR UPDATE", (name,))
            .map_err(EngineError::sql("read counter"))?
            .ok_or_else(|| EngineError::corrupt(format!("vitrine_counters has no {name} row")))?;
        let next = last + 1;
        tx.exec_drop("UPDATE vitrine_counters SET value = ? WHERE name = ?", (next, name))
            .map_err(EngineError::sql("bump counter"))?;
        tx.commit().map_err(EngineError::sql("commit counter"))?;
        Ok(next)
    }

    /// The product's ord, or a new one never handed out before (also not after a delete).
    pub fn ordinal_for(&self, id: &str) -> Result<u64> {
        let ord: Option<u64> = self
            .conn()?
            .exec_first("SELECT ord FROM products WHERE id = ?", (id.as_bytes(),))
            .map_err(EngineError::sql("ordinal"))?;
        match ord {
            Some(o) => Ok(o),
            None => self.next_counter("ord"),
        }
    }

    /// A new write version, strictly greater than every one handed out before.
    pub fn next_seq(&self) -> Result<u64> {
        self.next_counter("seq")
    }

    pub fn image_vectors(&self, id: &str) -> Result<Vec<Vec<f32>>> {
        let mut conn = self.conn()?;
        if self.vector_dim(&mut conn)?.is_none() {
            return Ok(vec![]);
        }
        let rows: Vec<Vec<u8>> = conn
            .exec(
                format!(
                    "SELECT v.vec FROM {} v JOIN products p ON p.ord = v.ord WHERE p.id = ? ORDER BY v.slot",
                    self.space.image
                ),
                (id.as_bytes(),),
            )
            .map_err(EngineError::sql("image vectors"))?;
        rows.iter().map(|b| parse_vector(b)).collect()
    }

    pub fn text_vector(&self, id: &str) -> Result<Option<Vec<f32>>> {
        let mut conn = self.conn()?;
        if self.vector_dim(&mut conn)?.is_none() {
            return Ok(None);
        }
        let row: Option<Vec<u8>> = conn
            .exec_first(
                format!("SELECT v.vec FROM {} v JOIN products p ON p.ord = v.ord WHERE p.id = ?", self.space.text),
                (id.as_bytes(),),
            )
            .map_err(EngineError::sql("text vector"))?;
        row.map(|b| parse_vector(&b)).transpose()
    }

    /// How many products pass the filter (and are not `exclude`).
    pub fn count_matching(&self, f: &Filters, exclude: Option<&str>) -> Result<u64> {
        let mut params = vec![];
        let clauses = filter_clauses(f, exclude, &mut params)?;
        let n: Option<u64> = self
            .conn()?
            .exec_first(format!("SELECT COUNT(*) FROM products p WHERE 1 = 1{clauses}"), params)
            .map_err(EngineError::sql("count matching"))?;
        Ok(n.unwrap_or(0))
    }

    /// The `k` products nearest to `v` in one vector channel that pass the filter: `(ord, cosine
    /// similarity)`, best first, each product once (its best image). `exact` scans the filtered
    /// set with exact distances instead of the HNSW index: for selective filters, where an ANN
    /// search with a filter may miss hits.
    ///
    /// The approximate path (`exact: false`) is the HNSW index with the filter as a subquery on
    /// `products`. seekdb applies such a filter to the index's candidates after the scan, so a
    /// selective filter can leave the answer short (measured in `filters_apply_inside_retrieval`:
    /// recall@10 0.95 on the 8-partition schema, 0.54 on one partition, misses only under
    /// filters passing under 10% of products); when an answer under a filter comes back with
    /// fewer than `k` products, this path falls back to the exact scan, so it never returns
    /// fewer hits than exist. The searcher should still choose `exact` for selective filters up
    /// front and save the wasted ANN query.
    pub fn vector_channel(
        &self,
        ch: VectorChannel,
        v: &[f32],
        f: &Filters,
        exclude: Option<&str>,
        k: usize,
        exact: bool,
    ) -> Result<Vec<(u64, f32)>> {
        if k == 0 {
            return Ok(vec![]);
        }
        let k = k.min(10_000);
        let mut conn = self.conn()?;
        let dim = self.require_dim(&mut conn)?;
        if v.len() != dim {
            return Err(EngineError::Dimension { message: format!("a query vector of length {} for dimension {dim}", v.len()) });
        }
        let lit = vector_literal(v)?;
        let mut fparams = vec![];
        let clauses = filter_clauses(f, exclude, &mut fparams)?;
        let table = match ch {
            VectorChannel::Image => &self.space.image,
            VectorChannel::Text => &self.space.text,
        };
        // The filter is a subquery on products, never a join: with `JOIN products p … WHERE
        // <filter on p>`, seekdb 1.4's APPROXIMATE plan (vector index scan with pre-filter under
        // a merge join) returned rows failing the filter. Without filters every vector row is
        // live (vectors and rows change in one transaction).
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE v.ord IN (SELECT p.ord FROM products p WHERE 1 = 1{clauses})")
        };
        let run = |conn: &mut PooledConn, sql: String| -> Result<Vec<(u64, f64)>> {
            let mut params = vec![Value::from(lit.as_str())];
            params.extend(fparams.iter().cloned());
            params.push(Value::from(lit.as_str()));
            conn.exec(sql, params).map_err(EngineError::sql("vector channel"))
        };
        // One row per product, computed exactly over the filtered set.
        let exact_sql = format!(
            "SELECT v.ord, MIN(cosine_distance(v.vec, ?)) AS d FROM {table} v{filter}
             GROUP BY v.ord ORDER BY MIN(cosine_distance(v.vec, ?)) LIMIT {k}"
        );
        if exact {
            return Ok(best_per_product(run(&mut conn, exact_sql)?, k));
        }
        let mut fetch = if ch == VectorChannel::Image { k * IMAGE_OVERSAMPLE } else { k };
        let mut tries = 0;
        loop {
            let sql = format!(
                "SELECT v.ord, cosine_distance(v.vec, ?) AS d FROM {table} v{filter}
                 ORDER BY cosine_distance(v.vec, ?) APPROXIMATE LIMIT {fetch}"
            );
            let rows = run(&mut conn, sql)?;
            let full = rows.len() == fetch;
            let hits = best_per_product(rows, k);
            if hits.len() >= k {
                return Ok(hits);
            }
            if full && ch == VectorChannel::Image && tries < 2 {
                // Several images of the same products filled the answer: fetch deeper.
                fetch *= 4;
                tries += 1;
                continue;
            }
            if !full && !clauses.is_empty() {
                // A short answer under a filter: seekdb filters the index's candidates after the
                // scan, so a selective filter leaves fewer than k even when more products pass.
                // Only the exact scan is right then (its cost is bounded by the filtered set).
                return Ok(best_per_product(run(&mut conn, exact_sql)?, k));
            }
            return Ok(hits);
        }
    }

    /// Products matching `text` in the full-text index and the filter: `(ord, relevance)`, best
    /// first. Empty or blank text matches nothing; text over [`MAX_KEYWORD_CHARS`] is an error.
    pub fn keyword_channel(&self, text: &str, f: &Filters, exclude: Option<&str>, k: usize) -> Result<Vec<(u64, f32)>> {
        let Some(text) = check_keyword_text(text)? else { return Ok(vec![]) };
        if k == 0 {
            return Ok(vec![]);
        }
        let mut conn = self.conn()?;
        // Title terms one edit from a word no title has join the query as words of it.
        let typos = self.typo_terms(&mut conn, text)?;
        let with_typos = if typos.is_empty() { text.to_string() } else { format!("{text} {}", typos.join(" ")) };
        let analyzed = self.analysis.apply(&with_typos);
        let text = analyzed.trim();
        if text.is_empty() {
            return Ok(vec![]);
        }
        let k = k.min(10_000);
        let mut params = vec![Value::from(text); 4];
        let clauses = filter_clauses(f, exclude, &mut params)?;
        let sql = format!(
            "SELECT p.ord, {KEYWORD_SCORE} AS s FROM products p WHERE {MATCH_ANY}{clauses} ORDER BY s DESC, p.ord LIMIT {k}"
        );
        let rows: Vec<(u64, f64)> = conn.exec(sql, params).map_err(EngineError::sql("keyword channel"))?;
        Ok(rows.into_iter().map(|(o, s)| (o, s as f32)).collect())
    }

    /// The products of `ords`, in the order asked; ords without a product are skipped.
    pub fn products_by_ord(&self, ords: &[u64]) -> Result<Vec<StoredProduct>> {
        let mut found: HashMap<u64, StoredProduct> = HashMap::new();
        let mut conn = self.conn()?;
        for chunk in ords.chunks(1000) {
            let sql = format!("SELECT ord, doc FROM products WHERE ord IN ({})", placeholders(chunk.len()));
            let rows: Vec<(u64, String)> = conn.exec(sql, chunk.to_vec()).map_err(EngineError::sql("products by ord"))?;
            for (o, d) in rows {
                found.insert(o, decode_doc(&d)?);
            }
        }
        Ok(ords.iter().filter_map(|o| found.get(o).cloned()).collect())
    }

    /// One page of products and the total: every product by ord, or, with text, the keyword
    /// matches by relevance.
    pub fn list_products(&self, text: Option<&str>, offset: usize, limit: usize) -> Result<(Vec<StoredProduct>, u64)> {
        let analyzed = match text {
            Some(t) => check_keyword_text(t)?.map(|t| self.analysis.apply(t)),
            None => None,
        };
        let text = analyzed.as_deref().map(str::trim);
        if text == Some("") {
            // Words that analyze to nothing (punctuation) match nothing.
            return Ok((vec![], 0));
        }
        let limit = limit.min(10_000);
        let offset = offset.min(u32::MAX as usize);
        let mut conn = self.conn()?;
        let (docs, total): (Vec<String>, Option<u64>) = match text {
            None => (
                conn.query(format!("SELECT doc FROM products ORDER BY ord LIMIT {limit} OFFSET {offset}")).map_err(EngineError::sql("list"))?,
                conn.query_first("SELECT COUNT(*) FROM products").map_err(EngineError::sql("list"))?,
            ),
            Some(t) => (
                conn.exec(
                    format!(
                        "SELECT p.doc FROM products p WHERE {MATCH_ANY} ORDER BY {KEYWORD_SCORE} DESC, p.ord LIMIT {limit} OFFSET {offset}"
                    ),
                    (t, t, t, t),
                )
                .map_err(EngineError::sql("list"))?,
                conn.exec_first(format!("SELECT COUNT(*) FROM products p WHERE {MATCH_ANY}"), (t,)).map_err(EngineError::sql("list"))?,
            ),
        };
        let products = docs.iter().map(|d| decode_doc(d)).collect::<Result<Vec<_>>>()?;
        Ok((products, total.unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vitrine_core::PriceRange;

    #[test]
    fn an_engine_is_shared_across_threads() {
        fn send_sync_clone<T: Send + Sync + Clone>() {}
        send_sync_clone::<Engine>();
    }

    #[test]
    fn vectors_round_trip_through_both_forms() {
        let v = vec![0.25f32, -1.0, 1e-7, 3.5];
        let lit = vector_literal(&v).unwrap();
        assert_eq!(parse_vector(lit.as_bytes()).unwrap(), v);
        let packed: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(parse_vector(&packed).unwrap(), v);
        assert!(vector_literal(&[f32::NAN]).is_err());
        assert!(vector_literal(&[f32::INFINITY]).is_err());
        assert!(parse_vector(b"[1,x]").is_err());
        assert!(parse_vector(&[1, 2, 3]).is_err());
    }

    #[test]
    fn filters_become_placeholders_only() {
        let hostile = "x') OR 1=1; DROP TABLE products; --";
        let f = Filters {
            category: vec!["a".into(), hostile.into()],
            brand: vec![],
            price: Some(PriceRange { min: Some(1.0), max: None }),
            attributes: [(hostile.to_string(), vec!["v`".to_string()]), ("empty".to_string(), vec![])].into(),
        };
        let mut params = vec![];
        let sql = filter_clauses(&f, Some(hostile), &mut params).unwrap();
        assert!(!sql.contains("DROP") && !sql.contains('\'') && !sql.contains('`'), "{sql}");
        assert_eq!(sql.matches('?').count(), params.len());
        assert_eq!(params.len(), 2 + 1 + 2 + 1);
        assert!(sql.contains("p.category IN (?, ?)") && sql.contains("p.price >= ?") && sql.contains("p.id <> ?"), "{sql}");
        assert!(!sql.contains("brand"), "an empty value list is no condition: {sql}");
        let mut none = vec![];
        assert_eq!(filter_clauses(&Filters::default(), None, &mut none).unwrap(), "");
        let bad = Filters { price: Some(PriceRange { min: Some(5.0), max: Some(1.0) }), ..Default::default() };
        assert!(filter_clauses(&bad, None, &mut none).unwrap_err().is_user_error());
    }

    #[test]
    fn keyword_text_bounds() {
        assert_eq!(check_keyword_text("  ").unwrap(), None);
        assert_eq!(check_keyword_text(" red bag ").unwrap(), Some("red bag"));
        assert!(check_keyword_text(&"é".repeat(MAX_KEYWORD_CHARS)).is_ok());
        assert!(check_keyword_text(&"a".repeat(MAX_KEYWORD_CHARS + 1)).is_err());
    }

    #[test]
    fn indexed_text_is_cut_at_a_character_boundary() {
        let long = format!("{}é{}", "a".repeat(MAX_INDEXED_TEXT_BYTES - 1), "b".repeat(10));
        let Value::Bytes(b) = indexed_text(Some(&long)) else { panic!("bytes") };
        assert_eq!(b.len(), MAX_INDEXED_TEXT_BYTES - 1, "the two-byte é straddles the limit and goes");
        assert_eq!(indexed_text(None), Value::NULL);
        assert_eq!(indexed_text(Some("short")), Value::from("short"));
    }

    #[test]
    fn best_image_per_product() {
        let hits = [(1, 0.5), (2, 0.1), (1, 0.05), (3, 0.9), (2, 0.2)];
        let v = best_per_product(hits, 2);
        assert_eq!(v.iter().map(|h| h.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((v[0].1 - 0.95).abs() < 1e-6 && (v[1].1 - 0.9).abs() < 1e-6);
    }
}
