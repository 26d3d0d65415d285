//! Scopes: what a token (or an operator certificate) may change. A scoped credential acts only
//! on services whose name matches one of its globs, or whose spec carries the tag
//! `team:NAME` of its team; node-wide changes (drain, keyring, leave, tokens) are outside
//! every scope. Reads are not scoped: a scope limits changes, not views.

use std::fmt;

/// The spec tag that says which team owns a service: `tags = ["team:payments"]`.
pub const TEAM_TAG_PREFIX: &str = "team:";
/// Globs one scope may hold at most.
const MAX_GLOBS: usize = 32;

/// What a credential may change. The default (no globs, no team) is unscoped: everything
/// its role allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Scope {
    /// Service name globs (`*` any run of characters, `?` one character).
    pub services: Vec<String>,
    /// The team whose services (tag `team:NAME`) it may change.
    pub team: Option<String>,
}

/// What a change acts on, as far as scopes are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A service, with the team its spec names (if any).
    Service {
        /// The service's name.
        name: &'a str,
        /// Its `team:` tag, if it has one.
        team: Option<&'a str>,
    },
    /// The node or the cluster: no scoped credential may change it.
    NodeWide,
}

impl Scope {
    /// Whether it is unscoped (today's meaning of a token).
    pub fn is_unscoped(&self) -> bool {
        self.services.is_empty() && self.team.is_none()
    }

    /// Whether a change of `subject` is inside it.
    pub fn allows(&self, subject: Subject<'_>) -> bool {
        if self.is_unscoped() {
            return true;
        }
        match subject {
            Subject::NodeWide => false,
            Subject::Service { name, team } => {
                self.services.iter().any(|glob| glob_match(glob, name))
                    || (self.team.is_some() && self.team.as_deref() == team)
            }
        }
    }

    /// Checks globs and team as given on a command line or in a file.
    pub fn check(&self) -> Result<(), String> {
        if self.services.len() > MAX_GLOBS {
            return Err(format!("at most {MAX_GLOBS} service globs"));
        }
        for glob in &self.services {
            let plain: String = glob.chars().filter(|c| !"*?".contains(*c)).collect();
            if glob.is_empty()
                || glob.len() > 64
                || !plain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(format!(
                    "service glob {glob:?} must be 1 to 64 letters, digits, '.', '_', '-', '*' or '?'"
                ));
            }
        }
        if let Some(team) = &self.team
            && (team.is_empty()
                || team.len() > 64
                || !team
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
        {
            return Err(format!(
                "team {team:?} must be 1 to 64 letters, digits, '.', '_' or '-'"
            ));
        }
        Ok(())
    }

    /// The scope as the on-behalf header carries it: `services=a,b team=x` (empty when
    /// unscoped).
    pub fn to_header(&self) -> String {
        let mut parts = Vec::new();
        if !self.services.is_empty() {
            parts.push(format!("services={}", self.services.join(",")));
        }
        if let Some(team) = &self.team {
            parts.push(format!("team={team}"));
        }
        parts.join(" ")
    }

    /// Reads one word of the on-behalf header's scope; `None` when it is not one.
    pub fn read_header_word(&mut self, word: &str) -> Option<()> {
        if let Some(globs) = word.strip_prefix("services=") {
            self.services
                .extend(globs.split(',').filter(|g| !g.is_empty()).map(String::from));
        } else if let Some(team) = word.strip_prefix("team=") {
            self.team = Some(team.to_string());
        } else {
            return None;
        }
        self.check().ok()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.services.is_empty() {
            parts.push(format!("services {}", self.services.join(", ")));
        }
        if let Some(team) = &self.team {
            parts.push(format!("team {team}"));
        }
        if parts.is_empty() {
            f.write_str("everything")
        } else {
            f.write_str(&parts.join(" or "))
        }
    }
}

/// The team a service's tags name (`team:NAME`), if any.
pub fn team_of(tags: &[String]) -> Option<&str> {
    tags.iter().find_map(|t| t.strip_prefix(TEAM_TAG_PREFIX))
}

/// Whether `text` matches `glob`: `*` any run of characters, `?` exactly one.
pub fn glob_match(glob: &str, text: &str) -> bool {
    let (g, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match g.get(gi) {
            Some('*') => {
                star = Some((gi, ti));
                gi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                gi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sg, st)) => {
                    gi = sg + 1;
                    ti = st + 1;
                    star = Some((sg, st + 1));
                }
                None => return false,
            },
        }
    }
    g[gi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        let cases = [
            ("web-*", "web-api", true),
            ("web-*", "web-", true),
            ("web-*", "api", false),
            ("*", "anything", true),
            ("w?b", "web", true),
            ("w?b", "weeb", false),
            ("*-api-*", "pay-api-v2", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("web", "web", true),
            ("web", "web2", false),
        ];
        for (glob, text, expected) in cases {
            assert_eq!(glob_match(glob, text), expected, "{glob} ~ {text}");
        }
    }

    #[test]
    fn a_scope_allows_its_services_and_team_and_nothing_node_wide() {
        let scope = Scope {
            services: vec!["web-*".into()],
            team: Some("payments".into()),
        };
        let service = |name, team| Subject::Service { name, team };
        assert!(scope.allows(service("web-a", None)));
        assert!(scope.allows(service("billing", Some("payments"))));
        assert!(!scope.allows(service("billing", Some("search"))));
        assert!(!scope.allows(service("billing", None)));
        assert!(!scope.allows(Subject::NodeWide));
        assert!(Scope::default().allows(Subject::NodeWide), "unscoped");
        assert_eq!(scope.to_string(), "services web-* or team payments");
        assert_eq!(
            team_of(&["x".into(), "team:payments".into()]),
            Some("payments")
        );
    }

    #[test]
    fn the_header_form_round_trips_and_bad_globs_are_named() {
        let scope = Scope {
            services: vec!["web-*".into(), "api".into()],
            team: Some("pay".into()),
        };
        let mut read = Scope::default();
        for word in scope.to_header().split(' ') {
            read.read_header_word(word).unwrap();
        }
        assert_eq!(read, scope);
        let bad = Scope {
            services: vec!["web prod".into()],
            team: None,
        };
        assert!(bad.check().unwrap_err().contains("\"web prod\""));
    }
}
