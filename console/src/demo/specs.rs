//! Which spec runs on which demo node, rendered for that node.
//!
//! The demo specs are embedded (`assets/demo/*.toml`), so `strata` works from any directory.
//! A spec may use three placeholders, filled per node before it is applied:
//! `{bin}` (the directory of the Strata binaries), `{balancer}` (the node's balancer address)
//! and `{flaky_every_ms}` (how often `flaky` crashes).
//!
//! Placement: the demo services are spread by a fixed table ([`DEMO`]). A spec of your own
//! (`--services DIR`) with `instances` of 1 (or none) runs on the first node; with N > 1 its
//! instances are spread over the nodes round-robin, each node getting its share as `instances`.

use anyhow::{Context, Result, bail};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How many agents the demo runs.
pub const NODES: usize = 3;

/// The demo services: (file name, spec text, the nodes (1-based) it runs on).
const DEMO: [(&str, &str, &[usize]); 5] = [
    (
        "web.toml",
        include_str!("../../../assets/demo/web.toml"),
        &[1],
    ),
    (
        "api.toml",
        include_str!("../../../assets/demo/api.toml"),
        &[1, 2, 3],
    ),
    (
        "worker.toml",
        include_str!("../../../assets/demo/worker.toml"),
        &[2],
    ),
    (
        "flaky.toml",
        include_str!("../../../assets/demo/flaky.toml"),
        &[3],
    ),
    (
        "hog.toml",
        include_str!("../../../assets/demo/hog.toml"),
        &[3],
    ),
];

/// What the placeholders stand for on one node.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// The directory of `strata`, `strata-agent` and `strata-demo`.
    pub bin: PathBuf,
    /// The node's balancer address.
    pub balancer: IpAddr,
    /// How often `flaky` crashes.
    pub flaky_every: Duration,
}

/// A spec read from `--services DIR`, before rendering.
#[derive(Debug, Clone)]
pub struct UserSpec {
    /// The file it came from.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// Its `instances` (1 when not given).
    pub instances: u32,
}

/// One spec to apply to one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The node, 1-based.
    pub node: usize,
    /// Where the spec came from, for messages: "demo/web.toml" or a file path.
    pub source: String,
    /// The rendered spec, ready to apply.
    pub text: String,
}

/// Reads every `*.toml` in `dir`, in name order; a file that is not TOML is an error
/// naming the file.
pub fn read_dir(dir: &Path) -> Result<Vec<UserSpec>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the services dir {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("{} holds no *.toml spec", dir.display());
    }
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("{} is not a valid spec", path.display()))?;
            let instances = match table.get("instances") {
                None => 1,
                Some(v) => v
                    .as_integer()
                    .and_then(|n| u32::try_from(n).ok())
                    .with_context(|| {
                        format!("{}: instances must be a whole number", path.display())
                    })?,
            };
            Ok(UserSpec {
                path,
                text,
                instances,
            })
        })
        .collect()
}

/// Every spec of the demo for every node, rendered: the demo services when `demo` is set,
/// then the user's specs. `contexts[i]` is node i+1's.
pub fn plan(demo: bool, user: &[UserSpec], contexts: &[NodeContext]) -> Result<Vec<Placement>> {
    let mut placements = Vec::new();
    if demo {
        for (file, text, nodes) in DEMO {
            for &node in nodes {
                let ctx = contexts.get(node - 1).context("no such demo node")?;
                placements.push(Placement {
                    node,
                    source: format!("demo/{file}"),
                    text: render(text, ctx),
                });
            }
        }
    }
    for spec in user {
        let source = spec.path.display().to_string();
        for (i, ctx) in contexts.iter().enumerate() {
            let share = share(spec.instances, i, contexts.len());
            if share == 0 {
                continue;
            }
            let text = if spec.instances <= 1 {
                render(&spec.text, ctx)
            } else {
                with_instances(&render(&spec.text, ctx), share)
                    .with_context(|| format!("{source}: cannot set instances"))?
            };
            placements.push(Placement {
                node: i + 1,
                source: source.clone(),
                text,
            });
        }
    }
    Ok(placements)
}

/// How many of `instances` node `index` (0-based) of `nodes` runs: all of one on the first
/// node; more spread round-robin.
fn share(instances: u32, index: usize, nodes: usize) -> u32 {
    if instances <= 1 {
        return u32::from(index == 0);
    }
    let (n, i) = (instances as usize, index);
    (n / nodes + usize::from(i < n % nodes)) as u32
}

/// `text` with its `instances` set to `count`.
fn with_instances(text: &str, count: u32) -> Result<String> {
    let mut table: toml::Table = toml::from_str(text)?;
    table.insert("instances".into(), toml::Value::Integer(i64::from(count)));
    Ok(toml::to_string(&table)?)
}

/// Fills the placeholders of `text` for one node; paths are escaped for TOML strings.
pub fn render(text: &str, ctx: &NodeContext) -> String {
    let bin = ctx
        .bin
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    text.replace("{bin}", &bin)
        .replace("{balancer}", &ctx.balancer.to_string())
        .replace("{flaky_every_ms}", &ctx.flaky_every.as_millis().to_string())
}

/// The demo services' names, in the order they are applied.
pub fn demo_names() -> Vec<&'static str> {
    DEMO.iter()
        .filter_map(|(file, _, _)| file.strip_suffix(".toml"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contexts() -> Vec<NodeContext> {
        (0..NODES)
            .map(|i| NodeContext {
                bin: PathBuf::from("/opt/st \"x\""),
                balancer: IpAddr::from([127, 0, 0, 2 + i as u8]),
                flaky_every: Duration::from_secs(3),
            })
            .collect()
    }

    #[test]
    fn demo_specs_are_rendered_per_node_and_spread() {
        let plan = plan(true, &[], &contexts()).unwrap();
        let api: Vec<usize> = plan
            .iter()
            .filter(|p| p.source == "demo/api.toml")
            .map(|p| p.node)
            .collect();
        assert_eq!(api, vec![1, 2, 3]);
        let web = plan.iter().find(|p| p.source == "demo/web.toml").unwrap();
        assert!(
            web.text.contains(r#"API_ADDR = "127.0.0.2:18081""#),
            "{}",
            web.text
        );
        assert!(
            web.text.contains(r#""/opt/st \"x\"/strata-demo""#),
            "{}",
            web.text
        );
        let worker = plan
            .iter()
            .find(|p| p.source == "demo/worker.toml")
            .unwrap();
        assert!(worker.text.contains(r#"WEB_ADDR = "127.0.0.3:18080""#));
        let flaky = plan.iter().find(|p| p.source == "demo/flaky.toml").unwrap();
        assert!(flaky.text.contains(r#"FLAKY_EVERY_MS = "3000""#));
        for p in &plan {
            assert!(!p.text.contains("{bin}") && !p.text.contains("{balancer}"));
            toml::from_str::<toml::Table>(&p.text).unwrap();
        }
        assert_eq!(demo_names(), ["web", "api", "worker", "flaky", "hog"]);
    }

    #[test]
    fn user_specs_run_on_the_first_node_unless_they_ask_for_more_instances() {
        let one = UserSpec {
            path: "a.toml".into(),
            text: "name = \"a\"\ncommand = [\"{bin}/x\"]\n".into(),
            instances: 1,
        };
        let five = UserSpec {
            path: "b.toml".into(),
            text: "name = \"b\"\ninstances = 5\ncommand = [\"/bin/true\"]\n".into(),
            instances: 5,
        };
        let two = UserSpec {
            path: "c.toml".into(),
            text: "name = \"c\"\ninstances = 2\ncommand = [\"/bin/true\"]\n".into(),
            instances: 2,
        };
        let plan = plan(false, &[one, five, two], &contexts()).unwrap();
        let shares: Vec<(String, usize, i64)> = plan
            .iter()
            .map(|p| {
                let t: toml::Table = toml::from_str(&p.text).unwrap();
                let n = t.get("instances").and_then(|v| v.as_integer()).unwrap_or(1);
                (p.source.clone(), p.node, n)
            })
            .collect();
        assert_eq!(
            shares,
            vec![
                ("a.toml".into(), 1, 1),
                ("b.toml".into(), 1, 2),
                ("b.toml".into(), 2, 2),
                ("b.toml".into(), 3, 1),
                ("c.toml".into(), 1, 1),
                ("c.toml".into(), 2, 1),
            ]
        );
        assert!(plan[0].text.contains("/opt/st"));
    }

    #[test]
    fn a_services_dir_without_specs_or_with_a_bad_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_dir(dir.path()).unwrap_err();
        assert!(e.to_string().contains("no *.toml"), "{e}");
        std::fs::write(dir.path().join("bad.toml"), "name = ").unwrap();
        let e = read_dir(dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("bad.toml"), "{e:#}");
        std::fs::write(dir.path().join("bad.toml"), "name = \"x\"\ninstances = 3\n").unwrap();
        assert_eq!(read_dir(dir.path()).unwrap()[0].instances, 3);
    }
}
