//! The example's environment (05-example-server.md §1.2), read and validated once at startup
//! so that a typo fails the process before it listens.

use std::net::SocketAddr;

/// The default HMAC secret of the reference (a warning is logged when it is used).
pub const DEFAULT_JWT_SECRET: &str = "your-secret-key-change-in-production";

/// Settings from the environment.
#[derive(Debug, Clone)]
pub struct ExampleConfig {
    /// `DATABASE_URL`, when set.
    pub database_url: Option<String>,
    /// `JWT_SECRET` (raw bytes of the string).
    pub jwt_secret: String,
    /// `OVERSYNC_DB_POOL_MAX_CONNS` (≥ 1, default 50).
    pub pool_max_conns: usize,
    /// `OVERSYNC_DB_POOL_MIN_CONNS` (0..=max, default 5; deadpool opens connections lazily,
    /// so this is validated but only advisory).
    pub pool_min_conns: usize,
    /// `OVERSYNC_LOG_STAGE_TIMINGS` is `1`, `true` or `yes`.
    pub log_stage_timings: bool,
    /// `OVERSYNC_LISTEN` (default `0.0.0.0:8080`, the reference's `:8080`).
    pub listen: SocketAddr,
}

/// A setting that does not parse or is out of range.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {message}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl Default for ExampleConfig {
    fn default() -> Self {
        ExampleConfig {
            database_url: None,
            jwt_secret: DEFAULT_JWT_SECRET.to_owned(),
            pool_max_conns: 50,
            pool_min_conns: 5,
            log_stage_timings: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        }
    }
}

impl ExampleConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = ExampleConfig {
            database_url: lookup("DATABASE_URL").filter(|v| !v.trim().is_empty()),
            ..ExampleConfig::default()
        };
        if let Some(secret) = lookup("JWT_SECRET").filter(|v| !v.is_empty()) {
            config.jwt_secret = secret;
        }
        let int = |name: &'static str, default: usize| -> Result<i64, ConfigError> {
            match lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
            {
                None => Ok(default as i64),
                Some(v) => v.parse::<i64>().map_err(|_| ConfigError {
                    name,
                    message: format!("{v:?} is not an integer"),
                }),
            }
        };
        let max = int("OVERSYNC_DB_POOL_MAX_CONNS", config.pool_max_conns)?;
        if max < 1 {
            return Err(ConfigError {
                name: "OVERSYNC_DB_POOL_MAX_CONNS",
                message: format!("must be >= 1, got {max}"),
            });
        }
        let min = int("OVERSYNC_DB_POOL_MIN_CONNS", config.pool_min_conns)?;
        if min < 0 || min > max {
            return Err(ConfigError {
                name: "OVERSYNC_DB_POOL_MIN_CONNS",
                message: format!("must be between 0 and {max}, got {min}"),
            });
        }
        config.pool_max_conns = usize::try_from(max).unwrap_or(usize::MAX);
        config.pool_min_conns = usize::try_from(min).unwrap_or(0);
        config.log_stage_timings = lookup("OVERSYNC_LOG_STAGE_TIMINGS").is_some_and(|v| {
            matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes")
        });
        if let Some(listen) = lookup("OVERSYNC_LISTEN").filter(|v| !v.trim().is_empty()) {
            let listen = listen.trim();
            // Accept Go's ":8080" spelling as all interfaces.
            let spelled = if listen.starts_with(':') {
                format!("0.0.0.0{listen}")
            } else {
                listen.to_owned()
            };
            config.listen = spelled.parse().map_err(|_| ConfigError {
                name: "OVERSYNC_LISTEN",
                message: format!("{listen:?} is not host:port"),
            })?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<ExampleConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ExampleConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn pool_defaults_are_fifty_and_five() {
        let config = from(&[]).unwrap();
        assert_eq!((config.pool_max_conns, config.pool_min_conns), (50, 5));
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.jwt_secret, DEFAULT_JWT_SECRET);
    }

    #[test]
    fn pool_overrides_are_accepted_and_bad_values_rejected() {
        let config = from(&[
            ("OVERSYNC_DB_POOL_MAX_CONNS", "10"),
            ("OVERSYNC_DB_POOL_MIN_CONNS", "0"),
        ])
        .unwrap();
        assert_eq!((config.pool_max_conns, config.pool_min_conns), (10, 0));
        assert!(from(&[("OVERSYNC_DB_POOL_MAX_CONNS", "0")]).is_err());
        assert!(from(&[("OVERSYNC_DB_POOL_MIN_CONNS", "-1")]).is_err());
        assert!(
            from(&[
                ("OVERSYNC_DB_POOL_MAX_CONNS", "3"),
                ("OVERSYNC_DB_POOL_MIN_CONNS", "4")
            ])
            .is_err()
        );
        assert!(from(&[("OVERSYNC_DB_POOL_MAX_CONNS", "many")]).is_err());
    }

    #[test]
    fn listen_accepts_go_spelling_and_stage_timings_flag() {
        let config = from(&[
            ("OVERSYNC_LISTEN", ":9090"),
            ("OVERSYNC_LOG_STAGE_TIMINGS", " YES "),
        ])
        .unwrap();
        assert_eq!(config.listen.port(), 9090);
        assert!(config.log_stage_timings);
        assert!(from(&[("OVERSYNC_LISTEN", "nowhere")]).is_err());
    }
}
