//! API tokens: made once, shown once, stored only as SHA-256 hashes in `tokens.toml` in the
//! data dir. The agent re-reads the file when it changes, so `strata-agent token create`
//! and `revoke` take effect without a restart.

use super::role::Role;
use super::scope::Scope;
use crate::fsutil::write_atomic;
use base64::Engine as _;
use rand::TryRng as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The token file's name inside the data dir.
pub const TOKENS_FILE: &str = "tokens.toml";
/// Every token starts with this, so a leaked one is recognisable (and greppable).
pub const TOKEN_PREFIX: &str = "strata_";
/// Random bytes in a token: 256 bits, so a plain hash is as strong as a slow one.
const TOKEN_BYTES: usize = 32;

/// One stored token: who it is and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The name audit records show for calls made with it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the secret.
    pub sha256: [u8; 32],
    /// What it may change (unscoped: everything its role allows).
    pub scope: Scope,
}

/// What can go wrong reading or changing `tokens.toml`.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file exists but cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The token file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The token file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// One entry is wrong: names the entry and the field.
    #[error("{path}: token {index} ({name:?}): {field}: {problem}")]
    Invalid {
        /// The token file.
        path: PathBuf,
        /// Position in the file, from 1.
        index: usize,
        /// The entry's name as written.
        name: String,
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// `create` with a name that is already taken.
    #[error("a token named {0:?} already exists (revoke it first)")]
    Exists(String),
    /// `revoke` of a name that is not there.
    #[error("no token named {0:?}")]
    NotFound(String),
    /// A bad name or secret given on the command line.
    #[error("{0}")]
    Usage(String),
    /// The OS gave no randomness.
    #[error("no OS randomness: {0}")]
    Random(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default, rename = "token")]
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: String,
    sha256: String,
    #[serde(default)]
    created_unix_secs: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    services: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    team: Option<String>,
}

/// Checks a token name: what audit records and `token list` show.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
    {
        return Err("may contain only letters, digits, '.', '_', '@' and '-'".into());
    }
    Ok(())
}

/// SHA-256 of a secret.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new random secret, `strata_` and 43 URL-safe base64 characters.
pub fn generate_secret() -> Result<String, TokenError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Parses and checks the text of a token file; `path` is only for messages.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Token>, TokenError> {
    let file: TokenFile = toml::from_str(text).map_err(|e| TokenError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut tokens: Vec<Token> = Vec::with_capacity(file.tokens.len());
    for (i, entry) in file.tokens.into_iter().enumerate() {
        let invalid = |field, problem: String| TokenError::Invalid {
            path: path.to_path_buf(),
            index: i + 1,
            name: entry.name.clone(),
            field,
            problem,
        };
        check_name(&entry.name).map_err(|p| invalid("name", p))?;
        if tokens.iter().any(|t| t.name == entry.name) {
            return Err(invalid("name", "appears twice".into()));
        }
        let role = entry
            .role
            .parse()
            .map_err(|e: super::role::UnknownRole| invalid("role", e.to_string()))?;
        let sha256 = unhex(&entry.sha256)
            .ok_or_else(|| invalid("sha256", "must be 64 hexadecimal digits".into()))?;
        let scope = Scope {
            services: entry.services.clone(),
            team: entry.team.clone(),
        };
        scope.check().map_err(|p| invalid("scope", p))?;
        tokens.push(Token {
            name: entry.name,
            role,
            sha256,
            scope,
        });
    }
    Ok(tokens)
}

/// The token file's text; `None` when there is no file yet.
fn read_text(path: &Path) -> Result<Option<String>, TokenError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The file as stored, once its entries are checked: what `add` and `revoke` change.
fn read_file(path: &Path) -> Result<TokenFile, TokenError> {
    let Some(text) = read_text(path)? else {
        return Ok(TokenFile::default());
    };
    parse(&text, path)?;
    toml::from_str(&text).map_err(|e| TokenError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn write_file(path: &Path, file: &TokenFile) -> Result<(), TokenError> {
    let io = |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = toml::to_string(file).map_err(|e| TokenError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let text = format!(
        "# Strata API tokens: names, roles and SHA-256 hashes. Managed by `strata-agent token`.\n{text}"
    );
    write_atomic(path, text.as_bytes()).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)
}

/// Stores a token named `name` with `role`, `scope` and the given secret (for the same token
/// on several agents); fails if the name is taken. Notes in the data dir that the agent has
/// had credentials, so it fails closed from then on.
pub fn add(
    path: &Path,
    name: &str,
    role: Role,
    scope: &Scope,
    secret: &str,
) -> Result<(), TokenError> {
    check_name(name).map_err(|p| TokenError::Usage(format!("token name {name:?}: {p}")))?;
    scope.check().map_err(TokenError::Usage)?;
    if secret.trim() != secret || secret.len() < 16 || secret.len() > 512 {
        return Err(TokenError::Usage(
            "the token must be 16 to 512 characters without surrounding spaces".into(),
        ));
    }
    let mut file = read_file(path)?;
    if file.tokens.iter().any(|t| t.name == name) {
        return Err(TokenError::Exists(name.to_string()));
    }
    file.tokens.push(TokenEntry {
        name: name.to_string(),
        role: role.as_str().to_string(),
        sha256: hex(&hash(secret)),
        created_unix_secs: crate::state::unix_now_ms() / 1000,
        services: scope.services.clone(),
        team: scope.team.clone(),
    });
    write_file(path, &file)?;
    if let Some(dir) = path.parent() {
        super::credentials::MarkerFile::in_dir(dir)
            .note(true)
            .map_err(|source| TokenError::Io {
                path: dir.join(super::credentials::MARKER_FILE),
                source,
            })?;
    }
    Ok(())
}

/// Makes a new token, stores its hash and returns the secret (shown once, never stored).
pub fn create(path: &Path, name: &str, role: Role, scope: &Scope) -> Result<String, TokenError> {
    let secret = generate_secret()?;
    add(path, name, role, scope, &secret)?;
    Ok(secret)
}

/// Removes the token named `name`.
pub fn revoke(path: &Path, name: &str) -> Result<(), TokenError> {
    let mut file = read_file(path)?;
    let before = file.tokens.len();
    file.tokens.retain(|t| t.name != name);
    if file.tokens.len() == before {
        return Err(TokenError::NotFound(name.to_string()));
    }
    write_file(path, &file)
}

/// The stored tokens (names and roles), for `token list`.
pub fn list(path: &Path) -> Result<Vec<Token>, TokenError> {
    match read_text(path)? {
        Some(text) => parse(&text, path),
        None => Ok(Vec::new()),
    }
}

/// Whether two hashes are equal, in time that does not depend on where they differ.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Identifies a file version: a change of any of these means "read it again".
/// What identifies one version of a file (mtime, inode, length; `None`: no file), so a file is
/// read again only when it changed.
pub(crate) type Stamp = Option<(i64, i64, u64, u64)>;

struct Cached {
    stamp: Stamp,
    tokens: Result<Arc<Vec<Token>>, String>,
}

/// What the agent found at `tokens.toml`: no file, a file that cannot be read (why), or
/// its tokens.
pub type Found = Result<Option<Arc<Vec<Token>>>, String>;

/// The agent's view of `tokens.toml`, re-read whenever the file changes.
pub struct TokenStore {
    path: PathBuf,
    cached: Mutex<Cached>,
}

/// The [`Stamp`] of the file at `path` now.
pub(crate) fn stamp_of(path: &Path) -> Result<Stamp, std::io::Error> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((m.mtime(), m.mtime_nsec(), m.ino(), m.len()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl TokenStore {
    /// The store at `path`. A file that is there but broken does not stop the agent: every
    /// token is refused (and callers with it) until it is fixed.
    pub fn open(path: PathBuf) -> TokenStore {
        let stamp = stamp_of(&path).ok().flatten();
        let tokens = list(&path).map(Arc::new).map_err(|e| e.to_string());
        TokenStore {
            path,
            cached: Mutex::new(Cached { stamp, tokens }),
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current tokens: `None` when there is no file; `Err` (with the reason) when the
    /// file became unreadable, in which case every token is refused: a broken file never
    /// opens the API.
    pub fn current(&self) -> Found {
        let stamp = stamp_of(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mut cached = self
            .cached
            .lock()
            .map_err(|_| "the token cache is unavailable".to_string())?;
        if cached.stamp != stamp {
            cached.stamp = stamp;
            cached.tokens = list(&self.path).map(Arc::new).map_err(|e| {
                tracing::error!(error = %e, "cannot read the token file; refusing every token");
                e.to_string()
            });
        }
        match cached.stamp {
            None => Ok(None),
            Some(_) => cached.tokens.clone().map(Some),
        }
    }

    /// The token whose secret is `secret`, if any.
    pub fn lookup(&self, secret: &str) -> Result<Option<Token>, String> {
        let digest = hash(secret);
        let Some(tokens) = self.current()? else {
            return Ok(None);
        };
        let mut found = None;
        for token in tokens.iter() {
            if same_bytes(&token.sha256, &digest) {
                found = Some(token.clone());
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_stores_only_the_hash_and_lookup_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let secret = create(&path, "ci", Role::Operate, &Scope::default()).unwrap();
        assert!(
            secret.starts_with(TOKEN_PREFIX) && secret.len() > 40,
            "{secret}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&secret[TOKEN_PREFIX.len()..]), "{text}");
        assert!(text.contains(&hex(&hash(&secret))));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let store = TokenStore::open(path.clone());
        let found = store.lookup(&secret).unwrap().unwrap();
        assert_eq!((found.name.as_str(), found.role), ("ci", Role::Operate));
        assert_eq!(store.lookup("strata_wrong").unwrap(), None);
    }

    #[test]
    fn the_store_follows_changes_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let store = TokenStore::open(path.clone());
        assert!(store.current().unwrap().is_none());
        let secret = create(&path, "ops", Role::Admin, &Scope::default()).unwrap();
        assert_eq!(store.lookup(&secret).unwrap().unwrap().role, Role::Admin);
        revoke(&path, "ops").unwrap();
        assert_eq!(store.lookup(&secret).unwrap(), None);
        std::fs::write(&path, "[[token]]\nname = 1\n").unwrap();
        let err = store.lookup(&secret).unwrap_err();
        assert!(err.contains("tokens.toml"), "{err}");
    }

    #[test]
    fn names_are_unique_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        create(&path, "a", Role::Read, &Scope::default()).unwrap();
        assert!(matches!(
            create(&path, "a", Role::Admin, &Scope::default()),
            Err(TokenError::Exists(_))
        ));
        assert!(matches!(
            create(&path, "bad name", Role::Read, &Scope::default()),
            Err(TokenError::Usage(_))
        ));
        assert!(matches!(revoke(&path, "b"), Err(TokenError::NotFound(_))));
        add(
            &path,
            "shared",
            Role::Read,
            &Scope::default(),
            "strata_0123456789abcdef",
        )
        .unwrap();
        let names: Vec<_> = list(&path).unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["a", "shared"]);
    }

    #[test]
    fn a_bad_file_names_the_entry_and_field() {
        let path = Path::new("/data/tokens.toml");
        let cases = [
            (
                "[[token]]\nname = \"x\"\nrole = \"root\"\nsha256 = \"\"\n",
                "token 1 (\"x\"): role",
            ),
            (
                "[[token]]\nname = \"x\"\nrole = \"read\"\nsha256 = \"zz\"\n",
                "token 1 (\"x\"): sha256: must be 64",
            ),
            (
                "[[token]]\nname = \"x\"\nrole = \"read\"\n",
                "missing field `sha256`",
            ),
            (
                "[[token]]\nname = \"\"\nrole = \"read\"\nsha256 = \"\"\n",
                "name: must be 1 to 64",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text, path).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
            assert!(err.starts_with("/data/tokens.toml"), "{err}");
        }
    }
}
