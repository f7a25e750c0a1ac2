//! The process context kache runs in, gathered once: configuration, store
//! location, current directory. Both wrapper mode and the CLI start here.

use std::path::PathBuf;

use crate::config::{Config, ConfigError};
use crate::store::Store;

/// Reads a variable of the real process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

pub struct Context {
    pub cwd: PathBuf,
    pub config: Config,
    pub store_dir: PathBuf,
}

impl Context {
    pub fn load() -> Result<Context, ConfigError> {
        let cwd = std::env::current_dir()
            .map_err(|e| ConfigError(format!("cannot read the current directory: {e}")))?;
        let config = Config::load(&cwd, &process_env)?;
        let store_dir = config.store_dir(&process_env);
        Ok(Context {
            cwd,
            config,
            store_dir,
        })
    }

    pub fn open_store(&self) -> std::io::Result<Store> {
        Store::open(&self.store_dir)
    }
}
