//! Image resolution for a pod's containers: the host image, or one pulled into the node's
//! store (with back-off after failures), named by its digest for the container status.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_image::{ImageConfig, ImageStore};

use super::Shared;

/// An image resolved (or not) for one container, and when to try again after a failure.
pub(super) struct Pulled {
    pub(super) image: String,
    pub(super) result: Result<Image, (String, String)>,
    pub(super) retry_at: Instant,
    pub(super) backoff: Duration,
    pub(super) failures: u32,
}

/// An image ready to run.
#[derive(Clone)]
pub(super) struct Image {
    pub(super) layers: Vec<PathBuf>,
    pub(super) config: ImageConfig,
    pub(super) host: bool,
    pub(super) id: String,
}

pub(super) async fn resolve_image(
    shared: &Shared,
    image: &str,
    policy: &str,
) -> Result<Image, (String, String)> {
    let data = shared.cfg.data_dir.join("images");
    if image == berth_runtime::host::NAME {
        let layer = berth_runtime::host::layer(&data).map_err(|e| {
            (
                "CreateContainerError".to_string(),
                format!("the host image: {e}"),
            )
        })?;
        return Ok(Image {
            layers: vec![layer],
            config: ImageConfig {
                env: vec![format!("PATH={}", berth_runtime::host::PATH)],
                ..Default::default()
            },
            host: true,
            id: "berth://host".into(),
        });
    }
    let store = ImageStore::open(&data).map_err(|e| ("ErrImagePull".to_string(), e.to_string()))?;
    let local = store.resolve(image);
    let record = match (local, policy) {
        (Ok(r), p) if p != "Always" => r,
        (Err(e), "Never") => {
            return Err((
                "ErrImageNeverPull".into(),
                format!(
                    "Container image \"{image}\" is not present with pull policy of Never: {e}"
                ),
            ));
        }
        (_, _) => {
            let reference = berth_image::Reference::parse(image)
                .map_err(|e| ("InvalidImageName".to_string(), e.to_string()))?;
            let opts = berth_image::registry::PullOptions {
                insecure: shared.cfg.insecure_registries.clone(),
                parallel: 3,
                ..Default::default()
            };
            match berth_image::registry::pull(&store, &reference, &opts, &|_| {}).await {
                Ok(r) => r,
                Err(e) => {
                    // A pull that fails but leaves a usable local copy (IfNotPresent raced,
                    // or Always with the registry down) still runs, as kubelet does not.
                    return Err(("ErrImagePull".into(), e.to_string()));
                }
            }
        }
    };
    // Unpacking waits on the layer's lock and on the disk: never on the async workers.
    let store = store.with_max_layer_size(shared.cfg.max_layer_size);
    let wanted = record.layers.clone();
    let layers = tokio::task::spawn_blocking(move || {
        wanted
            .iter()
            .map(|l| store.layer_dir(l))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| {
        (
            "ErrImagePull".to_string(),
            format!("unpacking the image: {e}"),
        )
    })?
    .map_err(|e| ("ErrImagePull".to_string(), e.to_string()))?;
    Ok(Image {
        layers,
        config: record.config.clone(),
        host: false,
        id: record.config_digest.to_string(),
    })
}
