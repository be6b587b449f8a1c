//! `berth run`: one container from a local image, in the foreground, without the control
//! plane (what `docker run --rm` does), and the hidden single-threaded shim role that starts it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use berth_api::quantity::Quantity;
use berth_image::ImageStore;
use berth_runtime::ContainerSpec;
use berth_runtime::rootfs::Rootfs;
use clap::Args;

/// The hidden subcommand the runtime re-executes `berth` as.
pub const SHIM_ROLE: &str = "__shim-run";

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Where images and containers live
    #[arg(long, value_name = "DIR", env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Set an environment variable (repeatable)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Memory limit, e.g. 64Mi; going over it kills the container (exit 137)
    #[arg(long, value_name = "QUANTITY")]
    pub memory: Option<String>,
    /// CPU limit in CPUs, e.g. 0.5
    #[arg(long, value_name = "QUANTITY")]
    pub cpus: Option<String>,
    /// Most processes the container may have
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<i64>,
    /// Make the root filesystem read-only
    #[arg(long)]
    pub read_only: bool,
    /// The container's hostname (default: its id)
    #[arg(long)]
    pub hostname: Option<String>,
    /// Image (a name from `berth image ls`)
    pub image: String,
    /// Command and arguments (default: the image's)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn new_id() -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `uid[:gid]` or a user name looked up in the image's /etc/passwd.
fn resolve_user(user: &str, root: &Path) -> anyhow::Result<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let uid_gid = match u.parse::<u32>() {
        Ok(n) => (
            n,
            passwd
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 3 && f[2] == u)
                        .then(|| f[3].parse().ok())
                        .flatten()
                })
                .unwrap_or(n),
        ),
        Err(_) => passwd
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 3 && f[0] == u)
                    .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                    .flatten()
            })
            .with_context(|| format!("user {u:?} is not in the image's /etc/passwd"))?,
    };
    let gid = match g {
        "" => uid_gid.1,
        g => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => std::fs::read_to_string(root.join("etc/group"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 2 && f[0] == g)
                        .then(|| f[2].parse().ok())
                        .flatten()
                })
                .with_context(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid_gid.0, gid))
}

/// Removes the container's own cgroup directory under every controller. (`/berth`, the
/// parent, stays: other containers may be starting in it at this moment.)
fn remove_cgroups(cgroup_path: &str) {
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let leaf = Path::new(root).join(cgroup_path.trim_start_matches('/'));
        let _ = std::fs::remove_dir(&leaf);
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for e in entries.flatten() {
            let _ = std::fs::remove_dir(e.path().join(cgroup_path.trim_start_matches('/')));
        }
    }
}

/// Runs the container; returns its exit code.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    // Flags first: a typo costs nothing.
    let quantity = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<Quantity>> {
        v.as_deref()
            .map(|s| Quantity::parse(s).map_err(|e| anyhow::anyhow!("--{flag} {s:?}: {e}")))
            .transpose()
    };
    let memory_limit =
        quantity("memory", &args.memory)?.map_or(0, |q| q.units_ceil().max(0) as u64);
    let cpu_limit_millis = quantity("cpus", &args.cpus)?.map_or(0, |q| q.millis().max(0) as u64);
    let data = args
        .data_dir
        .clone()
        .unwrap_or_else(berth_cli::default_data_dir);
    let store = ImageStore::open(&data.join("images"))?;
    let image = store.resolve(&args.image)?;
    let layers = image
        .layers
        .iter()
        .map(|l| store.layer_dir(l))
        .collect::<Result<Vec<_>, _>>()?;
    let id = new_id();
    let dir = data.join("containers").join(&id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = (|| -> anyhow::Result<i32> {
        let mut root = Rootfs::mount(&layers, &dir)?;
        let mut env = Vec::new();
        for kv in &args.env {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("-e {kv:?}: write KEY=VALUE"))?;
            env.push((k.to_string(), v.to_string()));
        }
        let argv = image.config.argv(&args.command, &[]);
        if argv.is_empty() {
            bail!(
                "the image {} names no command; give one after the image name",
                image.name
            );
        }
        let env_all = image.config.env_with(&env);
        let path_env = env_all
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if berth_runtime::rootfs::find_program(root.path(), &argv[0], &path_env).is_none() {
            eprintln!(
                "error: command {:?} not found in the image {} (PATH={path_env}); check the command, or the image",
                argv[0], image.name
            );
            return Ok(127);
        }
        let (uid, gid) = resolve_user(&image.config.user, root.path())?;
        let cgroup_path = format!("/berth/{id}");
        let spec = ContainerSpec {
            argv,
            env: env_all,
            cwd: image.config.working_dir.clone(),
            uid,
            gid,
            hostname: args.hostname.clone().unwrap_or_else(|| id.clone()),
            read_only_root: args.read_only,
            memory_limit,
            cpu_limit_millis,
            cpu_request_millis: 0,
            pids_limit: args.pids_limit.unwrap_or(0),
            cgroup_path: cgroup_path.clone(),
        };
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle)?;
        let config = spec.to_oci(&root.path().display().to_string());
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&config)?,
        )?;
        let state = data.join("run/state");
        std::fs::create_dir_all(&state)?;
        let exe = std::env::current_exe().context("cannot find the berth executable")?;
        let status = Command::new(exe)
            .args([SHIM_ROLE, "--id", &id, "--bundle"])
            .arg(&bundle)
            .arg("--state")
            .arg(&state)
            .status()
            .context("cannot start the shim")?;
        remove_cgroups(&cgroup_path);
        root.unmount()?;
        Ok(status.code().unwrap_or(1))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The shim role: single-threaded by construction (called before any runtime starts).
pub fn shim_main(args: &[String]) -> i32 {
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(id), Some(bundle), Some(state)) = (get("--id"), get("--bundle"), get("--state"))
    else {
        eprintln!("usage: berth {SHIM_ROLE} --id ID --bundle DIR --state DIR");
        return 2;
    };
    match berth_runtime::run::run_to_exit(&id, Path::new(&bundle), Path::new(&state)) {
        Ok(exit) => exit.as_code(),
        Err(e) => {
            eprintln!("error: {e}");
            125
        }
    }
}
