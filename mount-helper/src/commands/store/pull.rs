//! `rfs pull REF`: an image from a registry into the store, and what `rfs push`, `rfs login`
//! share with it: connecting to a registry with the options of the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use rfs_fs::image::Platform;
use rfs_fs::registry::{Client, ClientOptions, ImageRef, RegistriesConf};
use rfs_fs::store::{PullOptions, PullResult, Store, index_platforms};

use crate::cli::{PullArgs, RegistryArgs};
use crate::progress::TransferDisplay;

/// The client options the command line and registries.conf give.
pub(crate) fn client_options(args: &RegistryArgs) -> Result<ClientOptions> {
    Ok(ClientOptions {
        tls_verify: args.tls_verify,
        cert_dir: args.cert_dir.clone(),
        credentials: None,
        conf: RegistriesConf::load()?,
    })
}

/// The references a pull of `text` tries, in order: itself if it names a registry, else one
/// per `unqualified-search-registries` entry (docker.io if there are none), as podman does.
fn candidates(text: &str, conf: &RegistriesConf) -> Result<Vec<ImageRef>> {
    let first = ImageRef::parse(text)?;
    if ImageRef::is_qualified(text) || conf.unqualified_search_registries.is_empty() {
        return Ok(vec![first]);
    }
    conf.unqualified_search_registries
        .iter()
        .map(|r| Ok(ImageRef::parse(&format!("{r}/{text}"))?))
        .collect()
}

/// Which platforms of an index to pull.
#[derive(Clone, Copy)]
pub(crate) enum Platforms<'a> {
    /// The one given, or this machine's.
    One(Option<&'a str>),
    /// Every one (`--all-platforms`): this machine's (else the first) gets the name.
    All,
}

/// Pulls `text` into `store`, drawing progress per layer: from each name's mirrors in
/// registries.conf first, then its registry; for a short name, from each search registry.
pub(crate) fn pull(
    store: &Store,
    text: &str,
    platforms: Platforms<'_>,
    registry: &RegistryArgs,
    lines: bool,
) -> Result<PullResult> {
    let opts = client_options(registry)?;
    let mut last_error = None;
    for name in candidates(text, &opts.conf)? {
        let sources = opts.conf.pull_sources(&name);
        let primary = sources.len() - 1;
        for (i, source) in sources.iter().enumerate() {
            let display = TransferDisplay::new(lines);
            let report = |what: &str, done: u64, total: u64| display.update(what, done, total);
            let attempt = Client::connect(&source.registry, Some(&source.repository), &opts)
                .map_err(rfs_fs::store::Error::from)
                .and_then(|client| {
                    let (named, others) = match platforms {
                        Platforms::One(p) => (p.map(str::to_owned), Vec::new()),
                        Platforms::All => split_platforms(&client, source)?,
                    };
                    for other in &others {
                        let result = store.pull(
                            &client,
                            source,
                            &PullOptions {
                                platform: Some(other),
                                progress: Some(&report),
                                untagged: true,
                                ..PullOptions::default()
                            },
                        )?;
                        eprintln!("{other}: {} (no name)", result.id);
                    }
                    store.pull(
                        &client,
                        source,
                        &PullOptions {
                            platform: named.as_deref(),
                            jobs: 0,
                            progress: Some(&report),
                            name: Some(&name),
                            untagged: false,
                        },
                    )
                });
            match attempt {
                Ok(result) => return Ok(result),
                // The next mirror, or the registry itself, may serve it.
                Err(e) if i < primary => {
                    eprintln!("rfs: mirror {source}: {e}; trying the next source");
                }
                // Another search registry may have it.
                Err(rfs_fs::store::Error::Registry(e))
                    if matches!(*e, rfs_fs::registry::Error::NotFound { .. }) =>
                {
                    last_error = Some(anyhow::Error::new(*e));
                }
                Err(e) => return Err(e).with_context(|| format!("pulling {source}")),
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no registry to pull {text} from")))
}

/// For `--all-platforms`: the platform that gets the name (this machine's if the index offers
/// it, else its first) and the others; `(None, [])` for a single image.
fn split_platforms(
    client: &Client,
    source: &ImageRef,
) -> Result<(Option<String>, Vec<String>), rfs_fs::store::Error> {
    let Some(list) = index_platforms(client, source)? else {
        return Ok((None, Vec::new()));
    };
    let host = Platform::parse_or_host(None)?;
    let named = list
        .iter()
        .filter_map(|p| Some((host.rank(p)?, p)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, p)| p)
        .or_else(|| list.first());
    let others = list
        .iter()
        .filter(|p| Some(*p) != named)
        .map(ToString::to_string)
        .collect();
    Ok((named.map(ToString::to_string), others))
}

/// `rfs mount REF` / `rfs run REF`: pulls REF first when it is no file and no image of the
/// store, as `podman run` does, with the default registry options; returns the ID of the image
/// to open when it is not REF itself. A reference that names a registry (`host[:port]/…`) is
/// pulled from it. A short name (`busybox`) is first looked for in the store under each
/// `unqualified-search-registries` entry of registries.conf (`HOST/busybox:latest`, as a pull
/// names it), then pulled from them in order; without such entries it is not pulled (a
/// misspelt local name must not reach a public registry), and `rfs pull` says what it is.
///
/// The pull runs as a child `rfs pull` process: `rfs mount` and `rfs run` fork afterwards,
/// which is sound only while they never had other threads (the pull's pool, the HTTP
/// client's resolver threads).
pub(crate) fn pull_if_missing(
    root: &Path,
    source: &Path,
    platform: Option<&str>,
) -> Result<Option<String>> {
    let Some(text) = source.to_str() else {
        return Ok(None);
    };
    if source.exists() {
        return Ok(None);
    }
    let store = Store::open(root)
        .with_context(|| format!("opening the image store in {}", root.display()))?;
    let missing = |name: &str| -> Result<Option<String>> {
        match store.resolve(name) {
            Ok(image) => Ok(Some(image.id.to_string())),
            Err(rfs_fs::store::Error::NoSuchImage { .. } | rfs_fs::store::Error::Reference(_)) => {
                Ok(None)
            }
            Err(e) => Err(e).with_context(|| format!("looking up {name} in the store")),
        }
    };
    if missing(text)?.is_some() {
        return Ok(None);
    }
    if !ImageRef::is_qualified(text) {
        let conf = RegistriesConf::load()?;
        if conf.unqualified_search_registries.is_empty() || ImageRef::parse(text).is_err() {
            return Ok(None);
        }
        for candidate in candidates(text, &conf)? {
            if let Some(id) = missing(&candidate.to_string())? {
                return Ok(Some(id));
            }
        }
    }
    drop(store);
    eprintln!("rfs: {text} is not in the store; pulling it");
    let exe = std::env::current_exe().context("finding the rfs binary")?;
    let mut pull = std::process::Command::new(exe);
    pull.arg("--root").arg(root).args(["pull", "-q"]);
    if let Some(p) = platform {
        pull.args(["--platform", p]);
    }
    let out = pull
        .arg(text)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting rfs pull")?;
    if !out.status.success() {
        bail!("{text}: not in the store, and pulling it failed (see above)");
    }
    // `rfs pull -q` prints the image ID.
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((!id.is_empty()).then_some(id))
}

/// Runs `rfs pull`: progress on stderr, the image ID on stdout.
pub(crate) fn run(root: Option<PathBuf>, args: &PullArgs) -> Result<ExitCode> {
    let store = super::open(root)?;
    let platforms = if args.all_platforms {
        Platforms::All
    } else {
        Platforms::One(args.platform.as_deref())
    };
    let result = pull(
        &store,
        &args.reference,
        platforms,
        &args.registry,
        args.quiet,
    )?;
    if !args.quiet {
        eprintln!("Digest: {}", result.repo_digest);
        eprintln!(
            "{} layers downloaded, {} already in the store",
            result.downloaded, result.present
        );
    }
    super::format::emit(&format!("{}\n", result.id))?;
    Ok(ExitCode::SUCCESS)
}
