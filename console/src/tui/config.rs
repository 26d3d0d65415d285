//! `~/.config/strata/console.toml`: the agent to open, theme, mouse and key remaps.
//!
//! ```toml
//! agent = "10.0.0.5:7700"
//! theme = "dark"        # dark, light or mono
//! mouse = false
//! [keys]
//! restart = "ctrl-r"    # action = "key"
//! ```

use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;

/// The config file's contents; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The agent, HOST:PORT.
    pub agent: Option<String>,
    /// dark, light or mono.
    pub theme: Option<String>,
    /// Capture the mouse.
    pub mouse: Option<bool>,
    /// Action name to key name.
    #[serde(default)]
    pub keys: HashMap<String, String>,
}

/// Where the config file is: `$XDG_CONFIG_HOME/strata/console.toml` or
/// `~/.config/strata/console.toml`.
pub fn path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("strata").join("console.toml"))
}

/// Parses config text; `source` names it in errors.
pub fn parse(text: &str, source: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|e| format!("{source}: {e}"))
}

/// Reads the config file; a missing file is the empty config.
pub fn load() -> Result<Config, String> {
    let Some(path) = path() else {
        return Ok(Config::default());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_fields_and_rejects_unknown_ones() {
        let c = parse(
            "agent = \"n1:7700\"\ntheme = \"mono\"\nmouse = true\n[keys]\nrestart = \"ctrl-r\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.agent.as_deref(), Some("n1:7700"));
        assert_eq!(c.keys["restart"], "ctrl-r");
        assert!(parse("agnet = \"x\"", "t").unwrap_err().contains("agnet"));
    }
}
