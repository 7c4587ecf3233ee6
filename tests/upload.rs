//! `GenerateManifestWithFiles`: an app uploaded as a `.tar.gz` stream (as
//! `argocd app manifests --local` sends it through the API server) renders
//! with revision `streamed`; archives with `../` entries, links out of the
//! tree, bombs, a wrong checksum or a wrong message order are refused, and
//! the server keeps serving.

mod common;

use common::*;
use manifold::grpc::proto::repository::manifest_request_with_files::Part;
use manifold::grpc::proto::repository::{
    ManifestFileChunk, ManifestFileMetadata, ManifestRequest, ManifestRequestWithFiles,
};
use manifold::server::{self, Tls};
use sha2::{Digest, Sha256};
use tonic::Code;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The stream the API server sends: request, metadata, 1 KiB chunks.
fn messages(
    request: ManifestRequest,
    archive: &[u8],
    checksum: &str,
) -> Vec<ManifestRequestWithFiles> {
    let mut messages = vec![
        ManifestRequestWithFiles {
            part: Some(Part::Request(request)),
        },
        ManifestRequestWithFiles {
            part: Some(Part::Metadata(ManifestFileMetadata {
                checksum: checksum.to_string(),
                size: 0,
            })),
        },
    ];
    messages.extend(archive.chunks(1024).map(|chunk| ManifestRequestWithFiles {
        part: Some(Part::Chunk(ManifestFileChunk {
            chunk: chunk.to_vec(),
        })),
    }));
    messages
}

fn local_request(path: &str) -> ManifestRequest {
    manifest_request("https://example.com/not-fetched.git", path, "HEAD")
}

/// A `.tar.gz` whose single entry has exactly these header fields
/// (written by hand, so `..` and absolute names get through).
fn archive_with(name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    {
        let bytes = header.as_old_mut();
        bytes.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            bytes.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
    }
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    builder.append(&header, data).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

#[tokio::test]
async fn uploads_render_and_unsafe_archives_are_refused() {
    let mut config = test_config(Tls::Disabled);
    config.pipeline.upload_limits.max_extracted = 1 << 20;
    let server = server::start(config).await.unwrap();
    let mut client = client(&server).await;

    // A directory app and a Kustomize app, as a developer has them locally.
    let local = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(local.path().join("apps/web")).unwrap();
    std::fs::create_dir_all(local.path().join("apps/kust")).unwrap();
    std::fs::write(
        local.path().join("apps/web/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local-web\n",
    )
    .unwrap();
    std::fs::write(
        local.path().join("apps/kust/kustomization.yaml"),
        "namePrefix: k-\nresources:\n- cm.yaml\n",
    )
    .unwrap();
    std::fs::write(
        local.path().join("apps/kust/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local-kust\n",
    )
    .unwrap();
    let mut archive = Vec::new();
    manifold::source::tarball::build(local.path(), &[], &mut archive).unwrap();
    let checksum = sha256_hex(&archive);

    for (path, name) in [("apps/web", "local-web"), ("apps/kust", "k-local-kust")] {
        let response = client
            .generate_manifest_with_files(tokio_stream::iter(messages(
                local_request(path),
                &archive,
                &checksum,
            )))
            .await
            .unwrap_or_else(|status| panic!("{path}: {status:?}"))
            .into_inner();
        assert_eq!(response.revision, "streamed");
        assert_eq!(names(&response.manifests), [name], "{path}");
    }

    let refuse = |archive: Vec<u8>, checksum: Option<String>| {
        let checksum = checksum.unwrap_or_else(|| sha256_hex(&archive));
        messages(local_request("."), &archive, &checksum)
    };
    let cases: Vec<(&str, Vec<ManifestRequestWithFiles>, Code, &str)> = vec![
        (
            "a ../ entry",
            refuse(
                archive_with("../escape.yaml", tar::EntryType::Regular, None, b"x"),
                None,
            ),
            Code::InvalidArgument,
            "leaves the extraction directory",
        ),
        (
            "an absolute path",
            refuse(
                archive_with("/etc/evil.yaml", tar::EntryType::Regular, None, b"x"),
                None,
            ),
            Code::InvalidArgument,
            "leaves the extraction directory",
        ),
        (
            "an absolute symlink",
            refuse(
                archive_with("link", tar::EntryType::Symlink, Some("/etc/passwd"), b""),
                None,
            ),
            Code::InvalidArgument,
            "symlink pointing outside",
        ),
        (
            "a symlink climbing out",
            refuse(
                archive_with("a/link", tar::EntryType::Symlink, Some("../../x"), b""),
                None,
            ),
            Code::InvalidArgument,
            "symlink pointing outside",
        ),
        (
            "a hard link",
            refuse(
                archive_with("hard", tar::EntryType::Link, Some("x"), b""),
                None,
            ),
            Code::InvalidArgument,
            "hard link",
        ),
        (
            "a bomb",
            refuse(
                archive_with("zeros", tar::EntryType::Regular, None, &vec![0u8; 8 << 20]),
                None,
            ),
            Code::ResourceExhausted,
            "--streamed-manifest-max-extracted-size",
        ),
        (
            "a wrong checksum",
            refuse(archive.clone(), Some(sha256_hex(b"something else"))),
            Code::InvalidArgument,
            "checksum mismatch",
        ),
    ];
    for (what, stream, code, message) in cases {
        let status = client
            .generate_manifest_with_files(tokio_stream::iter(stream))
            .await
            .expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(message),
            "{what}: {}",
            status.message()
        );
        assert!(
            !status.message().contains("/tmp/"),
            "{what} leaks a local path: {}",
            status.message()
        );
    }

    // Messages out of order.
    let mut stream = messages(local_request("apps/web"), &archive, &checksum);
    stream.swap(0, 1);
    let status = client
        .generate_manifest_with_files(tokio_stream::iter(stream))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // Still serving.
    let response = client
        .generate_manifest_with_files(tokio_stream::iter(messages(
            local_request("apps/web"),
            &archive,
            &checksum,
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&response.manifests), ["local-web"]);
    server.shutdown().await.unwrap();
}
