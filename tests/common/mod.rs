//! Helpers shared by the integration tests: a real SQLite file in a
//! temporary directory and a pool configured for it.
#![allow(dead_code)]

pub mod attacks;
pub mod csv;
pub mod in_process;
pub mod litestream;
pub mod mcp;
pub mod memory;
pub mod oauth;
pub mod ops;
pub mod writes;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eros_mcp::config::DatabaseConfig;
use eros_mcp::pool::{NoObserver, Pool};

/// A temporary directory holding the test database; removed on drop.
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub config: DatabaseConfig,
}

impl TestDb {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = DatabaseConfig {
            path: dir.path().join("test.db"),
            pool_size: 10,
            max_overflow: 5,
            checkout_timeout: Duration::from_secs(5),
            prewarm: 3,
            // Maintenance runs only when a test calls it.
            maintenance_interval: Duration::from_secs(3600),
            ..DatabaseConfig::default()
        };
        Self { dir, config }
    }

    pub fn path(&self) -> &Path {
        &self.config.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A pool on this database, built but not pre-warmed.
    pub fn pool(&self) -> Pool {
        let config = &self.config;
        Pool::new(
            &config.pool_settings(),
            config.connection_options(),
            Arc::new(NoObserver),
        )
        .expect("pool")
    }

    /// A pool on this database, pre-warmed (maintenance stays manual).
    pub fn warm_pool(&self) -> Arc<Pool> {
        let pool = Arc::new(self.pool());
        pool.prewarm().expect("prewarm");
        pool
    }

    /// Migrates the database and loads the demo data.
    pub fn with_demo_data(self) -> Self {
        let mut conn = eros_mcp::database::open_direct(&self.config).unwrap();
        eros_mcp::sqlite::migrations::migrate(&mut conn).unwrap();
        eros_mcp::sqlite::migrations::load_demo_data(&mut conn).unwrap();
        self
    }
}

/// One entry of a static tokens file (`EROS_AUTH_TOKENS_FILE`): `name`
/// holding `scopes`, for the SHA-256 of `token`.
pub fn token_entry(name: &str, token: &str, scopes: &[&str]) -> String {
    format!(
        "[[tokens]]\nname = {name:?}\nsha256 = {:?}\nscopes = {scopes:?}\n\n",
        eros_mcp::identity::tokens::digest_hex(token)
    )
}
