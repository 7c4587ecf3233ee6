//! What a commit's tree holds beyond plain files: submodules
//! (`ARGOCD_GIT_MODULES_ENABLED`, `submoduleEnabled`) and Git LFS
//! (`enableLfs`), rendered over gRPC from real repositories.

mod common;

use common::fixtures::GitRepo;
use common::*;
use manifold::grpc::proto::repository::*;
use manifold::grpc::proto::v1alpha1::ApplicationSourceDirectory;
use manifold::server::{self, Tls};
use tonic::Code;

fn config_map(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: {value:?}\n"
    )
}

/// The name of the repository directory (fixture repositories are
/// siblings in the temporary directory, so `../<name>` reaches one).
fn dir_name(repo: &GitRepo) -> String {
    repo.path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A superproject with `vendor/lib` (relative URL) pinning a library
/// that itself has a nested submodule `nested` (absolute URL).
struct Submodules {
    deep: GitRepo,
    lib: GitRepo,
    superproject: GitRepo,
}

impl Submodules {
    fn build() -> Self {
        let deep = GitRepo::new();
        deep.write("cm.yaml", &config_map("deep-cm", "deep"));
        let deep_sha = deep.commit("deep");
        let lib = GitRepo::new();
        lib.write("app/cm.yaml", &config_map("lib-cm", "v1"))
            .add_submodule("nested", &deep.url(), &deep_sha);
        let lib_sha = lib.commit("lib v1");
        let superproject = GitRepo::new();
        superproject
            .write("apps/own/cm.yaml", &config_map("own-cm", "own"))
            .add_submodule("vendor/lib", &format!("../{}", dir_name(&lib)), &lib_sha);
        superproject.commit("pin lib v1");
        Submodules {
            deep,
            lib,
            superproject,
        }
    }
}

fn recurse(request: ManifestRequest) -> ManifestRequest {
    with_directory(
        request,
        ApplicationSourceDirectory {
            recurse: true,
            ..Default::default()
        },
    )
}

fn values(manifests: &[String]) -> Vec<(String, String)> {
    parse_manifests(manifests)
        .iter()
        .map(|m| {
            (
                m["metadata"]["name"].as_str().unwrap().to_string(),
                m["data"]["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn submodules_render_and_list_their_content() {
    let fx = Submodules::build();
    let url = fx.superproject.url();
    let server = start_plaintext().await;
    let mut client = client(&server).await;

    // An app inside a submodule, and one spanning the nested submodule.
    let inside = client
        .generate_manifest(manifest_request(&url, "vendor/lib/app", "HEAD"))
        .await
        .expect("renders an app inside a submodule")
        .into_inner();
    assert_eq!(values(&inside.manifests), [("lib-cm".into(), "v1".into())]);
    assert_eq!(inside.revision, fx.superproject.head());
    let mut spanning = values(
        &client
            .generate_manifest(recurse(manifest_request(&url, "vendor", "HEAD")))
            .await
            .expect("renders across the nested submodule")
            .into_inner()
            .manifests,
    );
    spanning.sort();
    assert_eq!(
        spanning,
        [
            ("deep-cm".to_string(), "deep".to_string()),
            ("lib-cm".to_string(), "v1".to_string())
        ]
    );

    // Bumping the gitlink renders the new submodule commit.
    fx.lib.write("app/cm.yaml", &config_map("lib-cm", "v2"));
    let lib_v2 = fx.lib.commit("lib v2");
    fx.superproject.git(&[
        "update-index",
        "--cacheinfo",
        &format!("160000,{lib_v2},vendor/lib"),
    ]);
    let bumped_sha = fx.superproject.commit("pin lib v2");
    let bumped = client
        .generate_manifest(manifest_request(&url, "vendor/lib/app", &bumped_sha))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(values(&bumped.manifests), [("lib-cm".into(), "v2".into())]);

    // The ApplicationSet generators see submodule content only when asked.
    let directories = |submodule_enabled: bool| GitDirectoriesRequest {
        repo: repo(&url),
        submodule_enabled,
        revision: bumped_sha.clone(),
        ..Default::default()
    };
    let with = client
        .get_git_directories(directories(true))
        .await
        .unwrap()
        .into_inner()
        .paths;
    for path in ["vendor/lib", "vendor/lib/app", "vendor/lib/nested"] {
        assert!(with.contains(&path.to_string()), "{path} in {with:?}");
    }
    let without = client
        .get_git_directories(directories(false))
        .await
        .unwrap()
        .into_inner()
        .paths;
    assert!(without.contains(&"vendor/lib".to_string()));
    assert!(
        !without.iter().any(|p| p.starts_with("vendor/lib/")),
        "{without:?}"
    );

    let files = |submodule_enabled: bool| GitFilesRequest {
        repo: repo(&url),
        submodule_enabled,
        revision: bumped_sha.clone(),
        path: "**/cm.yaml".into(),
        new_git_file_globbing_enabled: true,
        ..Default::default()
    };
    let with = client
        .get_git_files(files(true))
        .await
        .unwrap()
        .into_inner()
        .map;
    let mut names: Vec<_> = with.keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "apps/own/cm.yaml",
            "vendor/lib/app/cm.yaml",
            "vendor/lib/nested/cm.yaml"
        ]
    );
    assert!(String::from_utf8_lossy(&with["vendor/lib/app/cm.yaml"]).contains("v2"));
    let without = client
        .get_git_files(files(false))
        .await
        .unwrap()
        .into_inner()
        .map;
    assert_eq!(without.keys().collect::<Vec<_>>(), ["apps/own/cm.yaml"]);
    drop(fx.deep);
}

#[tokio::test]
async fn disabled_or_missing_submodules_are_clear() {
    let fx = Submodules::build();
    let url = fx.superproject.url();

    // ARGOCD_GIT_MODULES_ENABLED=false: the submodule is an empty
    // directory, as in Argo CD's checkout.
    let mut config = test_config(Tls::Disabled);
    config.pipeline.git_modules_enabled = false;
    let server = server::start(config).await.unwrap();
    let mut client = client(&server).await;
    let err = client
        .generate_manifest(manifest_request(&url, "vendor/lib/app", "HEAD"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("app path does not exist"), "{err:?}");
    let own = client
        .generate_manifest(manifest_request(&url, "apps/own", "HEAD"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&own.manifests), ["own-cm"]);

    // A gitlink to a commit its repository does not have.
    let broken = GitRepo::new();
    broken
        .write("apps/own/cm.yaml", &config_map("own-cm", "own"))
        .add_submodule(
            "vendor/gone",
            &fx.lib.url(),
            "0123456789abcdef0123456789abcdef01234567",
        );
    broken.commit("pin a commit that does not exist");
    let server = start_plaintext().await;
    let mut client = common::client(&server).await;
    let err = client
        .generate_manifest(manifest_request(&broken.url(), "apps/own", "HEAD"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("vendor/gone"), "{err:?}");

    // A submodule URL with a transport git refuses for submodules.
    let hostile = GitRepo::new();
    hostile
        .write("apps/own/cm.yaml", &config_map("own-cm", "own"))
        .add_submodule("x", "ext::sh -c id", &fx.lib.head());
    hostile.commit("ext transport");
    let err = client
        .generate_manifest(manifest_request(&hostile.url(), "apps/own", "HEAD"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not allowed"), "{err:?}");

    // The server goes on serving.
    let own = client
        .generate_manifest(manifest_request(&url, "vendor/lib/app", "HEAD"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&own.manifests), ["lib-cm"]);
}

#[tokio::test]
async fn lfs_files_render_with_their_content_when_enabled() {
    let repo = GitRepo::new();
    repo.track_with_lfs("apps/lfs/*.yaml")
        .write("apps/lfs/cm.yaml", &config_map("lfs-cm", "stored in LFS"))
        .write("apps/plain/cm.yaml", &config_map("plain-cm", "plain"));
    repo.commit("LFS content");
    let pointer = repo.git(&["cat-file", "-p", "HEAD:apps/lfs/cm.yaml"]);
    assert!(pointer.starts_with("version https://git-lfs.github.com/spec/v1"));
    let url = repo.url();
    let server = start_plaintext().await;
    let mut client = client(&server).await;

    let mut request = manifest_request(&url, "apps/lfs", "HEAD");
    request.repo.as_mut().unwrap().enable_lfs = true;
    let rendered = client
        .generate_manifest(request.clone())
        .await
        .expect("renders LFS content")
        .into_inner();
    assert_eq!(
        values(&rendered.manifests),
        [("lfs-cm".into(), "stored in LFS".into())]
    );
    // Again: the objects are already in the store, served from cache.
    client.generate_manifest(request).await.unwrap();

    // Without enableLfs the pointer itself is the file, which is not a
    // Kubernetes object (as in Argo CD without LFS).
    let err = client
        .generate_manifest(manifest_request(&url, "apps/lfs", "HEAD"))
        .await
        .expect_err("a pointer file is not a manifest");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    let mut plain = manifest_request(&url, "apps/plain", "HEAD");
    plain.repo.as_mut().unwrap().enable_lfs = true;
    let plain = client.generate_manifest(plain).await.unwrap().into_inner();
    assert_eq!(names(&plain.manifests), ["plain-cm"]);
}
