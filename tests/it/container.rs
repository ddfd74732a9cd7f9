//! The container image's layout, booted without Docker (no engine runs on the build machines):
//! the shipped `config/container.toml` with its absolute paths moved under a temporary root, the
//! `SASHAD_*` environment of `docker-compose.yml`, the config file found through
//! `SASHAD_CONFIG` as the Dockerfile sets it, the master key from a secret-like file, and the CLI
//! at the path `scripts/install-runtime.sh` gives it in the image. A chat runs through it with the
//! real CLI against the mock API, and the image's HEALTHCHECK script probes it.
//!
//! The image runs sashad as root in `isolation.mode = "uid"`. Run as root, as CI runs the tests,
//! the test does too: the chat's child runs in bubblewrap under the user's own uid, and the
//! user's folders in the `/data`-like volume end up owned by that uid. Run as another user, it
//! falls back to `auto` (user namespaces), the only mode a non-root daemon has.
//!
//! A second test keeps the packaging files agreeing with each other: the Dockerfile, the compose
//! file, the container config and the systemd unit name the same paths and port, and the same
//! capabilities for the same isolation mode.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::client::Api;
use crate::common::daemon::{claude_bin, sashad_bin, TestEnv};
use crate::common::mock_api::MockApi;
use crate::common::ws::assistant_text;

const KEY: &str = "sk-ant-api03-ContainerKey0000000000000000000000000000000000000000cccc";

/// Where the Dockerfile installs the CLI (`install-runtime.sh cli --prune PREFIX`).
const CLI_PREFIX: &str = "/opt/sashad/claude";
/// The compose file's secret, as the container sees it.
const SECRET_PATH: &str = "/run/secrets/master-key";
/// Where the Dockerfile installs the config, and the `SASHAD_CONFIG` it sets.
const CONFIG_PATH: &str = "/etc/sashad/sashad.toml";
/// `isolation.uid_base`'s default: users' children run as this uid and up.
const UID_BASE: u32 = 1_879_048_192;
/// The uid of the image's sashad user before it ran as root (issue "Isolation between users").
const OLD_IMAGE_UID: u32 = 10001;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// `config/container.toml`, parsed.
fn container_config() -> toml::Table {
    toml::from_str(&repo_file("config/container.toml")).unwrap()
}

/// The `SASHAD_*` variables in `docker-compose.yml`'s `environment:` map, quotes removed.
fn compose_env() -> Vec<(String, String)> {
    repo_file("docker-compose.yml")
        .lines()
        .filter_map(|line| {
            let (name, value) = line.trim().split_once(": ")?;
            name.starts_with("SASHAD_")
                .then(|| (name.to_owned(), value.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

/// The items of the list `key:` in `docker-compose.yml` (`- ITEM` lines below it).
fn compose_list(compose: &str, key: &str) -> Vec<String> {
    compose
        .lines()
        .skip_while(|l| l.trim() != format!("{key}:"))
        .skip(1)
        .filter(|l| !l.trim_start().starts_with('#'))
        .map_while(|l| l.trim().strip_prefix("- ").map(str::to_owned))
        .collect()
}

/// `path`, an absolute path in the container, under `root`.
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Moves every absolute path in the config under `root`.
fn rebase(value: &mut toml::Value, root: &Path) {
    match value {
        toml::Value::String(s) if s.starts_with('/') => {
            *s = under(root, s).to_str().unwrap().to_owned();
        }
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| rebase(v, root)),
        toml::Value::Array(a) => a.iter_mut().for_each(|v| rebase(v, root)),
        _ => {}
    }
}

/// Runs `scripts/healthcheck.sh` as the image's HEALTHCHECK does: no argument, `sashad` on
/// PATH, the container's environment. Returns whether it reported healthy.
fn healthcheck(env: &[(String, String)]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/healthcheck.sh");
    let bin_dir = sashad_bin().parent().unwrap().to_path_buf();
    let path = format!("{}:/usr/bin:/bin", bin_dir.display());
    let out = Command::new("bash")
        .arg(script)
        .env_clear()
        .env("PATH", path)
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_container_layout_boots_and_completes_a_chat() {
    let mock = MockApi::start();
    let mut env = TestEnv::new();
    let root = env.dir.path().to_path_buf();

    // /etc/sashad/sashad.toml: the shipped file, paths under the root. The port becomes 0 and
    // the address the loopback, as tests bind; everything else is as shipped.
    let mut config = toml::Value::Table(container_config());
    rebase(&mut config, &root);
    config["server"]["listen"] = "127.0.0.1:0".into();
    let config_file = under(&root, CONFIG_PATH);
    std::fs::create_dir_all(config_file.parent().unwrap()).unwrap();
    std::fs::write(&config_file, toml::to_string(&config).unwrap()).unwrap();

    // The CLI where the image installs it (here: the repository's pinned install).
    let cli = under(&root, &format!("{CLI_PREFIX}/node_modules/.bin/claude"));
    std::fs::create_dir_all(cli.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(claude_bin(), &cli).unwrap();
    assert_eq!(config["claude"]["binary"].as_str(), cli.to_str());

    // The secret, first as a host file with the usual 0644: refused, with the fix in the message.
    let secret = under(&root, SECRET_PATH);
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    std::fs::write(&secret, hex::encode(rand::random::<[u8; 32]>())).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();

    // The environment of docker-compose.yml, its paths under the root, plus the image's
    // SASHAD_CONFIG and the mock API.
    let mut vars: Vec<(String, String)> = compose_env()
        .into_iter()
        .map(|(k, v)| {
            let v = if v.starts_with('/') {
                under(&root, &v).to_str().unwrap().to_owned()
            } else {
                v
            };
            (k, v)
        })
        .collect();
    assert!(vars.iter().any(|(k, _)| k.starts_with("SASHAD__")));
    vars.push((
        "SASHAD_CONFIG".into(),
        config_file.to_str().unwrap().to_owned(),
    ));
    vars.push(("SASHAD__ANTHROPIC__BASE_URL".into(), mock.base_url()));
    let root_user = nix::unistd::geteuid().is_root();
    assert_eq!(config["isolation"]["mode"].as_str(), Some("uid"));
    if !root_user {
        vars.push(("SASHAD__ISOLATION__MODE".into(), "auto".into()));
    }
    env.config_flag = false;
    env.env = vars.clone();

    let (status, output) = env
        .try_start()
        .err()
        .expect("a key file others can read must be refused");
    assert_ne!(status.and_then(|s| s.code()), Some(0));
    assert!(output.contains("chmod 600"), "{output}");

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    if root_user {
        // sashad is root in the container, so the host file's owner does not matter (here the
        // uid of the image's former sashad user); only its mode does.
        std::os::unix::fs::chown(&secret, Some(OLD_IMAGE_UID), Some(OLD_IMAGE_UID)).unwrap();
    }
    let mut daemon = env.start();
    let data = under(&root, "/data");
    assert!(
        daemon.logs.text().contains(secret.to_str().unwrap()),
        "the key came from the secret:\n{}",
        daemon.logs.text()
    );

    // The image's HEALTHCHECK finds the port through `sashad config check`.
    let mut probe_env = vars.clone();
    probe_env.push(("SASHAD__SERVER__LISTEN".into(), daemon.addr.to_string()));
    let (healthy, why) = healthcheck(&probe_env);
    assert!(healthy, "healthcheck failed: {why}");

    let alice = Api::new(daemon.base_url())
        .user_with_key("alice", KEY)
        .await;
    let session = alice.new_session("demo").await;
    let mut ws = alice.socket(&session).await;
    ws.say("Hello there").await;
    let result = ws.until_result().await;
    assert_eq!(result["event"]["subtype"], "success");
    assert_eq!(assistant_text(&ws.frames), "Hello from the mock.");
    assert!(mock
        .messages_requests()
        .iter()
        .all(|r| r.api_key() == Some(KEY)));

    // The isolation in force, as the startup line and the admin API report it (alice, the
    // first user, is the admin).
    let mode = if root_user { "uid" } else { "userns" };
    assert!(
        daemon
            .logs
            .text()
            .contains(&format!("children run sandboxed (isolation {mode})")),
        "{}",
        daemon.logs.text()
    );
    let info = alice.get("/api/admin/daemon").await.expect(200).body;
    assert_eq!(info["isolation"]["mode"], mode);
    assert_eq!(info["isolation"]["sandbox"], true);

    // Everything the daemon keeps is in the volume; no key was generated beside it.
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert!(data.join("workspace").is_dir());
    assert!(!data.join("master.key").exists());
    if root_user {
        // The volume is root's; alice's home and project belong to her own uid, which is none
        // of the image's users, and are closed to everyone else.
        assert_eq!(meta.uid(), 0);
        let owned = |dir: &Path| {
            let entries: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(entries.len(), 1, "{entries:?}");
            let meta = std::fs::metadata(&entries[0]).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o700);
            (entries[0].clone(), meta.uid(), meta.gid())
        };
        let (home, uid, gid) = owned(&data.join("workspace/users"));
        let (projects, _, _) = owned(&data.join("workspace/projects"));
        let (project, project_uid, _) = owned(&projects);
        assert!(
            uid >= UID_BASE && uid != OLD_IMAGE_UID,
            "{}: {uid}",
            home.display()
        );
        assert_eq!((gid, project_uid), (uid, uid), "{}", project.display());
    }
    // The compose file asks for JSON logs.
    let logs = daemon.logs.text();
    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "not all log lines are JSON:\n{logs}"
    );
    daemon.assert_logs_free_of(&[KEY]);

    assert_eq!(daemon.stop().code(), Some(0), "docker stop exits cleanly");
    let (healthy, _) = healthcheck(&probe_env);
    assert!(!healthy, "a stopped daemon is unhealthy");
}

/// The packaging files name the same paths and port; a change to one that misses the others
/// fails here rather than in a container.
#[test]
fn dockerfile_compose_file_unit_and_container_config_agree() {
    let config = container_config();
    let dockerfile = repo_file("Dockerfile");
    let compose = repo_file("docker-compose.yml");
    let unit = repo_file("config/sashad.service");

    let cli = format!("{CLI_PREFIX}/node_modules/.bin/claude");
    assert_eq!(config["claude"]["binary"].as_str(), Some(cli.as_str()));
    assert!(dockerfile.contains(&format!("install-runtime.sh cli --prune {CLI_PREFIX}\n")));
    assert!(dockerfile.contains(&format!("COPY --from=cli {CLI_PREFIX} {CLI_PREFIX}\n")));
    assert!(unit.contains(&format!("Environment=SASHAD__CLAUDE__BINARY={cli}\n")));

    let data_dir = config["storage"]["data_dir"].as_str().unwrap();
    assert!(dockerfile.contains(&format!("VOLUME [\"{data_dir}\"]")));
    assert!(dockerfile.contains(&format!("--data-dir {data_dir} ")));
    assert!(compose.contains(&format!("sashad-data:{data_dir}\n")));

    let listen = config["server"]["listen"].as_str().unwrap();
    let port = listen.rsplit(':').next().unwrap();
    assert_eq!(listen, format!("0.0.0.0:{port}"));
    assert!(dockerfile.contains(&format!("EXPOSE {port}\n")));
    assert!(compose.contains(&format!(":{port}\"")));

    assert!(dockerfile.contains(&format!("ENV SASHAD_CONFIG={CONFIG_PATH}\n")));
    assert!(dockerfile.contains("--config-dir /etc/sashad --config "));
    assert!(dockerfile
        .contains("ENTRYPOINT [\"/usr/bin/tini\", \"--\", \"/usr/local/bin/sashad\", \"serve\"]"));

    // One isolation mode, and the same capabilities for it in the compose file and the unit.
    assert_eq!(config["isolation"]["mode"].as_str(), Some("uid"));
    assert!(unit.contains("\nEnvironment=SASHAD__ISOLATION__MODE=uid\n"));
    assert!(dockerfile.contains("\nUSER 0:0\n"));
    assert!(compose.contains("\n    user: \"0:0\"\n"));
    assert!(unit.contains("\nUser=root\n"));
    assert_eq!(compose_list(&compose, "cap_drop"), ["ALL"]);
    let mut docker_caps = compose_list(&compose, "cap_add");
    docker_caps.sort();
    let mut unit_caps: Vec<String> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .flat_map(str::split_whitespace)
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    unit_caps.sort();
    assert_eq!(docker_caps, unit_caps);
    for package in ["bubblewrap", "util-linux"] {
        assert!(dockerfile.contains(&format!(" {package} ")), "{package}");
    }

    let env = compose_env();
    let key_file = env
        .iter()
        .find(|(k, _)| k == "SASHAD_MASTER_KEY_FILE")
        .map(|(_, v)| v.as_str());
    assert_eq!(key_file, Some(SECRET_PATH));
    let secret_name = SECRET_PATH.rsplit('/').next().unwrap();
    assert!(compose.contains(&format!("target: {secret_name}\n")));

    // Every SASHAD__ name in the compose file and the unit is a real config key: the
    // layered loader refuses unknown ones.
    let unit_env = unit.lines().filter_map(|l| {
        let (k, v) = l.strip_prefix("Environment=")?.split_once('=')?;
        Some((k.to_owned(), v.replace("%S", "/var/lib")))
    });
    let all: Vec<(String, String)> = env.iter().cloned().chain(unit_env).collect();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/container.toml");
    sashad::config::Settings::load(
        Some(file.as_path()),
        all,
        &sashad::config::FlagOverrides::default(),
    )
    .unwrap();
}
