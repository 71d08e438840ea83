//! The engine's schema: an ordered list of migration steps, applied in one place ([`migrate`]),
//! and the model-dependent vector tables of each vector space ([`Space`]).
//!
//! # Persisted: changing any table needs a new step at the end of [`MIGRATIONS`]
//!
//! Version 1:
//!
//! | table | key | what |
//! | --- | --- | --- |
//! | `vitrine_meta` | `k` | `schema_version` (decimal), `model` (the [`vitrine_core::ModelId`] JSON), `vector_dim` |
//! | `vitrine_counters` | `name` | `ord` and `seq`: the last value handed out (updated under `SELECT … FOR UPDATE`) |
//! | `products` | `ord` (unique `id`) | `version`, `hash`, `doc` (the whole `StoredProduct` as JSON, for hydration); filter columns `category`, `brand` (`VARBINARY`: byte-exact, case- and trailing-space-sensitive, like the embedded index's raw terms), `price`; full-text columns `title`, `description`, `brand_text`, `category_text`, `attr_text` (catalog attributes as `key value` lines; zero-shot tags stay out, as in the embedded index) under a `FULLTEXT` index over all five, plus one over `title` and one over `brand_text, category_text` for the field weights of the keyword score |
//! | `product_attributes` | `(ord, k)`, index `(k, v, ord)` | every attribute filters see (`StoredProduct::all_attributes`: the catalog's, then the zero-shot tags), used as `p.ord IN (SELECT ord FROM product_attributes WHERE k = ? AND v IN (…))` inside the retrieval query |
//! | `image_vectors` | `(ord, slot)` | `vec VECTOR(dim)` under an HNSW cosine `VECTOR INDEX` (created by `set_model`) |
//! | `text_vectors` | `ord` | `vec VECTOR(dim)`, likewise |
//!
//! Version 2 adds `vitrine_jobs` (`id`; `created_at`, `doc`: an ingest job's status as JSON, written
//! by the node that runs it, read by every node).
//!
//! Version 3 adds vector spaces and the reindex fence (see [`crate::reindex`]):
//! - a *vector space* is one model's pair of vector tables. Space 0 is `image_vectors` /
//!   `text_vectors` (so databases from versions 1 and 2 are space 0 unchanged); space `n > 0` is
//!   `image_vectors_n` / `text_vectors_n`. `vitrine_meta` keys: `vectors` (the live space; absent
//!   means 0), `vector_dim.N` (space N's dimension; for space 0 of an older database, `vector_dim`).
//!   `model` and `vector_dim` always describe the live space.
//! - `vitrine_reindex`, one row named `fence`: `token` (empty when no reindex holds it), `space`
//!   (the space being filled), `model` (its model, JSON), `started` and `heartbeat` (engine time,
//!   `UNIX_TIMESTAMP()`, of the start and of the holder's last renewal). A fence whose heartbeat
//!   is older than [`crate::reindex::LEASE`] is dead and ignored.
//!
//! Version 4 adds `vitrine_meta.text_analysis`: `stemmed` when the full-text columns (and the
//! keyword queries) hold the keyword index's analyzed terms (`vitrine_store::keyword::stemmed_terms`:
//! lower-cased English stems, so "mugs" matches "mug" as on the embedded backend), `raw` for a
//! database that held products before version 4 (its rows keep the text as written). It also adds
//! `title_terms` (`term`): every raw title term ever written (`vitrine_store::keyword::raw_terms`),
//! the dictionary typo tolerance probes. Terms are never removed: a stale one only lets a typo
//! expand to a word that matches nothing. A database from before version 4 fills it as products
//! are written again (`vitrine reindex` writes them all).
//!
//! Filter columns hold a value only when it is at most [`vitrine_core::filters::MAX_FILTER_VALUE_BYTES`]
//! bytes: a longer one can never equal a (validated) filter value, so it is stored as NULL.
//!
//! # Scaling (a cluster)
//!
//! Every table keyed by `ord` is hash-partitioned by it (`PARTITION BY KEY(ord) PARTITIONS 8`):
//! a product's row, attributes and vectors live in the same partition, a write of one product
//! touches one partition, and the vector and full-text indexes are local per partition (an ANN
//! query fans out over the partitions and merges, which OceanBase does itself). On a cluster the
//! partitions spread over the nodes; 8 suits a few nodes, and a larger cluster wants more (set
//! when the tables are created, so changing it is a migration step). The unique index on
//! `products.id` is `GLOBAL`, because OceanBase allows a unique key without the partition key
//! only as a global index; it is what makes `get(id)` one lookup instead of one per partition.
//! seekdb accepts all of this, so the tests run on the partitioned schema.

use mysql::prelude::Queryable;

use crate::{EngineError, Result};

/// How every table keyed by `ord` is partitioned (see "Scaling" above). Fixed when a table is
/// created: changing it is a migration step.
macro_rules! partitioning {
    () => {
        " PARTITION BY KEY(ord) PARTITIONS 8"
    };
}

const PARTITIONING: &str = partitioning!();

/// One migration step: the SQL statements that take the schema from version `i` to `i + 1`.
/// Each statement is idempotent (`IF NOT EXISTS`, `INSERT IGNORE`), because OceanBase DDL is not
/// transactional: a step interrupted half-way is simply run again.
pub const MIGRATIONS: &[&[&str]] = &[
    // 1: the initial schema.
    &[
        "CREATE TABLE IF NOT EXISTS vitrine_counters (
            name VARCHAR(32) NOT NULL PRIMARY KEY,
            value BIGINT UNSIGNED NOT NULL
        )",
        "INSERT IGNORE INTO vitrine_counters (name, value) VALUES ('ord', 0), ('seq', 0)",
        concat!(
            "CREATE TABLE IF NOT EXISTS products (
            ord BIGINT UNSIGNED NOT NULL PRIMARY KEY,
            id VARBINARY(512) NOT NULL,
            version BIGINT UNSIGNED NOT NULL,
            hash VARCHAR(128) NOT NULL,
            category VARBINARY(256) NULL,
            brand VARBINARY(256) NULL,
            price DOUBLE NULL,
            title TEXT NULL,
            description TEXT NULL,
            brand_text TEXT NULL,
            category_text TEXT NULL,
            attr_text TEXT NULL,
            doc LONGTEXT NOT NULL,
            UNIQUE KEY products_id (id) GLOBAL,
            KEY products_category (category),
            KEY products_brand (brand),
            KEY products_price (price),
            FULLTEXT KEY products_text (title, description, brand_text, category_text, attr_text),
            FULLTEXT KEY products_title_text (title),
            FULLTEXT KEY products_brand_category_text (brand_text, category_text)
        ) DEFAULT CHARSET = utf8mb4",
            partitioning!()
        ),
        concat!(
            "CREATE TABLE IF NOT EXISTS product_attributes (
            ord BIGINT UNSIGNED NOT NULL,
            k VARBINARY(256) NOT NULL,
            v VARBINARY(256) NOT NULL,
            PRIMARY KEY (ord, k),
            KEY product_attributes_kv (k, v, ord)
        )",
            partitioning!()
        ),
    ],
    // 2: ingest job status, so that any node answers for any job.
    &["CREATE TABLE IF NOT EXISTS vitrine_jobs (
            id VARCHAR(64) NOT NULL PRIMARY KEY,
            created_at BIGINT UNSIGNED NOT NULL,
            doc LONGTEXT NOT NULL,
            KEY vitrine_jobs_created (created_at)
        ) DEFAULT CHARSET = utf8mb4"],
    // 3: the reindex fence (vector spaces need no table: space 0 is the tables of versions 1-2).
    &[
        "CREATE TABLE IF NOT EXISTS vitrine_reindex (
            name VARCHAR(16) NOT NULL PRIMARY KEY,
            token VARCHAR(64) NOT NULL,
            space INT UNSIGNED NOT NULL,
            model LONGTEXT NULL,
            started BIGINT NOT NULL,
            heartbeat BIGINT NOT NULL
        ) DEFAULT CHARSET = utf8mb4",
        "INSERT IGNORE INTO vitrine_reindex (name, token, space, model, started, heartbeat) VALUES ('fence', '', 0, NULL, 0, 0)",
    ],
    // 4: stemmed keyword text for new databases (one that already holds products keeps its raw
    // text: stems cannot be computed in SQL), and the title vocabulary for typo tolerance.
    &[
        "INSERT IGNORE INTO vitrine_meta (k, v)
         SELECT 'text_analysis', CASE WHEN EXISTS (SELECT 1 FROM products) THEN 'raw' ELSE 'stemmed' END FROM DUAL",
        "CREATE TABLE IF NOT EXISTS title_terms (term VARBINARY(160) NOT NULL PRIMARY KEY)",
    ],
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

const META_TABLE: &str = "CREATE TABLE IF NOT EXISTS vitrine_meta (
    k VARCHAR(64) NOT NULL PRIMARY KEY,
    v LONGTEXT NOT NULL
) DEFAULT CHARSET = utf8mb4";

pub(crate) fn read_meta(conn: &mut impl Queryable, key: &str) -> Result<Option<String>> {
    conn.exec_first("SELECT v FROM vitrine_meta WHERE k = ?", (key,)).map_err(EngineError::sql("read vitrine_meta"))
}

pub(crate) fn write_meta(conn: &mut impl Queryable, key: &str, value: &str) -> Result<()> {
    conn.exec_drop("INSERT INTO vitrine_meta (k, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)", (key, value))
        .map_err(EngineError::sql("write vitrine_meta"))
}

/// Records that the schema is at `version` at least: never lowers it, because nodes migrating
/// together finish their steps in any order (one that ran step 2 last must not undo another's 3).
fn write_version(conn: &mut impl Queryable, version: u32) -> Result<()> {
    conn.exec_drop(
        "INSERT INTO vitrine_meta (k, v) VALUES ('schema_version', ?)
         ON DUPLICATE KEY UPDATE v = IF(CAST(v AS UNSIGNED) < CAST(VALUES(v) AS UNSIGNED), VALUES(v), v)",
        (version.to_string(),),
    )
    .map_err(EngineError::sql("write the schema version"))
}

pub(crate) fn read_version(conn: &mut impl Queryable) -> Result<u32> {
    match read_meta(conn, "schema_version")? {
        None => Ok(0),
        Some(v) => v.trim().parse().map_err(|_| EngineError::corrupt(format!("vitrine_meta.schema_version is {v:?}"))),
    }
}

/// Times a failed migration is run again (see [`migrate`]).
const MIGRATE_RETRIES: u32 = 5;

/// Brings the database to [`SCHEMA_VERSION`]: applies the missing steps in order, recording the
/// version after each. A database at a newer version is refused and left untouched.
///
/// Nodes that start together on a new database migrate it together, and OceanBase DDL is not
/// transactional: another session's `CREATE TABLE` may still be in flight when this one's
/// `IF NOT EXISTS` returns (then the next statement finds no table, error 1146). Every step is
/// idempotent, so a migration that fails on SQL is run again, at most [`MIGRATE_RETRIES`] times
/// with a growing pause (3 s in all); other errors (a newer schema) are final at once.
pub(crate) fn migrate(conn: &mut impl Queryable, database: &str) -> Result<u32> {
    let mut attempt = 0;
    loop {
        match migrate_once(conn, database) {
            Err(EngineError::Sql { what, source }) if attempt < MIGRATE_RETRIES => {
                attempt += 1;
                tracing::warn!(database, attempt, "engine migration ({what}) failed, retrying: {source}");
                std::thread::sleep(std::time::Duration::from_millis(200 * u64::from(attempt)));
            }
            done => return done,
        }
    }
}

fn migrate_once(conn: &mut impl Queryable, database: &str) -> Result<u32> {
    conn.query_drop(META_TABLE).map_err(EngineError::sql("create vitrine_meta"))?;
    let found = read_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(EngineError::SchemaTooNew { database: database.to_string(), found, known: SCHEMA_VERSION });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        for sql in *step {
            conn.query_drop(sql).map_err(EngineError::sql("migrate"))?;
        }
        write_version(conn, i as u32 + 1)?;
        tracing::info!(database, version = i + 1, "engine schema migrated");
    }
    Ok(SCHEMA_VERSION)
}

/// One model's vector tables (see "Version 3" above): space 0 is the tables of versions 1 and 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    pub n: u32,
    pub image: String,
    pub text: String,
}

impl Space {
    pub fn new(n: u32) -> Space {
        if n == 0 {
            Space { n, image: "image_vectors".into(), text: "text_vectors".into() }
        } else {
            Space { n, image: format!("image_vectors_{n}"), text: format!("text_vectors_{n}") }
        }
    }

    /// The space a vector table belongs to, from its name; None for any other table.
    pub fn of_table(name: &str) -> Option<u32> {
        let rest = name.strip_prefix("image_vectors").or_else(|| name.strip_prefix("text_vectors"))?;
        match rest {
            "" => Some(0),
            r => r.strip_prefix('_').filter(|d| !d.starts_with('0')).and_then(|d| d.parse().ok()),
        }
    }

    /// The `vitrine_meta` key of this space's dimension.
    pub(crate) fn dim_key(&self) -> String {
        format!("vector_dim.{}", self.n)
    }

    /// The space's tables for `dim`-dimensional vectors, each with an HNSW cosine index.
    pub(crate) fn create_tables(&self, dim: usize) -> [String; 2] {
        let Space { image, text, .. } = self;
        [
            format!(
                "CREATE TABLE IF NOT EXISTS {image} (
                ord BIGINT UNSIGNED NOT NULL,
                slot SMALLINT UNSIGNED NOT NULL,
                vec VECTOR({dim}) NOT NULL,
                PRIMARY KEY (ord, slot),
                VECTOR INDEX {image}_hnsw (vec) WITH (DISTANCE = cosine, TYPE = hnsw, LIB = vsag)
            ) {PARTITIONING}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {text} (
                ord BIGINT UNSIGNED NOT NULL PRIMARY KEY,
                vec VECTOR({dim}) NOT NULL,
                VECTOR INDEX {text}_hnsw (vec) WITH (DISTANCE = cosine, TYPE = hnsw, LIB = vsag)
            ) {PARTITIONING}"
            ),
        ]
    }
}

/// The live vector space (`vitrine_meta.vectors`; 0 when absent).
pub(crate) fn live_space(conn: &mut impl Queryable) -> Result<u32> {
    parse_space(read_meta(conn, "vectors")?)
}

/// The value of `vitrine_meta.vectors` as a space number (0 when absent).
pub(crate) fn parse_space(v: Option<String>) -> Result<u32> {
    match v {
        None => Ok(0),
        Some(v) => v.trim().parse().map_err(|_| EngineError::corrupt(format!("vitrine_meta.vectors is {v:?}"))),
    }
}

/// Space `s`'s dimension (None before its model is recorded).
pub(crate) fn space_dim(conn: &mut impl Queryable, s: &Space) -> Result<Option<usize>> {
    let v = match read_meta(conn, &s.dim_key())? {
        Some(v) => Some(v),
        // Space 0 of a database from before version 3 has only the live key.
        None if s.n == 0 => read_meta(conn, "vector_dim")?,
        None => None,
    };
    match v {
        None => Ok(None),
        Some(d) => d.trim().parse().map(Some).map_err(|_| EngineError::corrupt(format!("vitrine_meta vector dimension {d:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_tables_and_names_round_trip() {
        for n in [0, 1, 7, 1234] {
            let s = Space::new(n);
            assert_eq!(Space::of_table(&s.image), Some(n));
            assert_eq!(Space::of_table(&s.text), Some(n));
        }
        assert_eq!(Space::new(0).image, "image_vectors", "space 0 is the tables of schema versions 1 and 2");
        for other in ["products", "image_vectors_", "image_vectors_01", "image_vectors_x", "text_vectorsx", "vitrine_meta"] {
            assert_eq!(Space::of_table(other), None, "{other}");
        }
    }
}
