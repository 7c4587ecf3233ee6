//! Domain errors -> gRPC status. One exhaustive mapping, no catch-all, so
//! a new error variant cannot ship without a deliberate code.

use std::path::PathBuf;

use tonic::{Code, Status};

use crate::{git, pipeline, render, source};

fn git_code(err: &git::Error) -> Code {
    match err {
        err @ (git::Error::ListRefsFailed { .. } | git::Error::FetchFailed { .. })
            if err.is_auth_failure() =>
        {
            Code::Unauthenticated
        }
        git::Error::ListRefsFailed { .. } | git::Error::FetchFailed { .. } => Code::Internal,
        git::Error::RevisionNotFound { .. } => Code::NotFound,
        git::Error::AmbiguousRevision { .. } => Code::InvalidArgument,
        git::Error::TimedOut { .. } => Code::DeadlineExceeded,
        git::Error::GitUnavailable { .. } | git::Error::Store { .. } => Code::Internal,
        git::Error::Credentials { .. } => Code::Unauthenticated,
        git::Error::Shared(inner) => git_code(inner),
        // The superproject's commit exists; what it pins does not.
        git::Error::Submodule {
            cause: Some(inner), ..
        } if !matches!(**inner, git::Error::RevisionNotFound { .. }) => git_code(inner),
        git::Error::Submodule { .. } => Code::FailedPrecondition,
    }
}

fn source_code(err: &source::Error) -> Code {
    match err {
        source::Error::AppPathAbsolute { .. }
        | source::Error::AppPathOutsideRoot { .. }
        | source::Error::AppPathDoesNotExist { .. }
        | source::Error::AppPathNotDirectory { .. } => Code::InvalidArgument,
        source::Error::Git(err) => git_code(err),
        source::Error::Snapshot { .. } => Code::Internal,
    }
}

fn render_code(err: &render::Error) -> Code {
    match err {
        render::Error::Unparsable { .. }
        | render::Error::MultipleJsonObjects { .. }
        | render::Error::SymlinkOutsideRepository { .. }
        | render::Error::OutOfBoundsSymlink { .. }
        | render::Error::BadSymlink { .. }
        | render::Error::InvalidMetadata { .. }
        | render::Error::ListItemNotObject { .. }
        | render::Error::Jsonnet { .. }
        | render::Error::JsonnetOutput { .. }
        | render::Error::ManifestsTooLarge { .. } => Code::FailedPrecondition,
        render::Error::InvalidGlob { .. } | render::Error::MultipleSourceTypes { .. } => {
            Code::InvalidArgument
        }
        render::Error::NotImplemented { .. } => Code::Unimplemented,
        render::Error::InvalidSpec { .. } | render::Error::ValueFile { .. } => {
            Code::InvalidArgument
        }
        render::Error::GlobNoMatch { .. } => Code::NotFound,
        render::Error::ToolFailed { .. } | render::Error::ToolOutput { .. } => {
            Code::FailedPrecondition
        }
        render::Error::ToolTimedOut { .. } => Code::DeadlineExceeded,
        render::Error::ToolUnavailable { .. } | render::Error::Io { .. } => Code::Internal,
        render::Error::PluginNotFound { .. } | render::Error::PluginOutput { .. } => {
            Code::FailedPrecondition
        }
        render::Error::PluginFailed {
            timed_out: true, ..
        } => Code::DeadlineExceeded,
        render::Error::PluginFailed {
            unavailable: true, ..
        } => Code::Unavailable,
        render::Error::PluginFailed { .. } => Code::FailedPrecondition,
    }
}

fn pipeline_code(err: &pipeline::Error) -> Code {
    match err {
        pipeline::Error::Git(err) => git_code(err),
        pipeline::Error::Source(err) => source_code(err),
        pipeline::Error::Render(err) => render_code(err),
        pipeline::Error::NotImplemented { .. } => Code::Unimplemented,
        pipeline::Error::Invalid { .. } => Code::InvalidArgument,
        pipeline::Error::Upload(err) if err.is_limit() => Code::ResourceExhausted,
        pipeline::Error::Upload(
            source::tarball::Error::Spool(_)
            | source::tarball::Error::Destination(_)
            | source::tarball::Error::DestinationNotEmpty
            | source::tarball::Error::Write { .. }
            | source::tarball::Error::Build { .. }
            | source::tarball::Error::Output(_),
        ) => Code::Internal,
        pipeline::Error::Upload(_) => Code::InvalidArgument,
        pipeline::Error::Charts(err) => match err {
            crate::charts::Error::ChartNotFound { .. } | crate::charts::Error::NoVersion { .. } => {
                Code::NotFound
            }
            crate::charts::Error::Constraint { .. } => Code::InvalidArgument,
            crate::charts::Error::Unauthorized { .. } => Code::Unauthenticated,
            crate::charts::Error::Archive { source, .. } if source.is_limit() => {
                Code::ResourceExhausted
            }
            crate::charts::Error::Archive { .. } => Code::FailedPrecondition,
            crate::charts::Error::Index { .. }
            | crate::charts::Error::Download { .. }
            | crate::charts::Error::Local { .. } => Code::Internal,
        },
        pipeline::Error::Inspect(err) => match err {
            crate::git::inspect::Error::CommitNotFound(_) => Code::NotFound,
            crate::git::inspect::Error::Pattern { .. } => Code::InvalidArgument,
            crate::git::inspect::Error::Git(_) => Code::Internal,
        },
        pipeline::Error::Internal { .. } => Code::Internal,
        pipeline::Error::Shared(err) => pipeline_code(err),
        // Generation is paused for this app after repeated failures.
        pipeline::Error::CachedFailure { .. } => Code::FailedPrecondition,
    }
}

/// The status for `err`, its message scrubbed of local paths.
pub fn to_status(err: pipeline::Error, private_paths: &[PathBuf]) -> Status {
    let code = pipeline_code(&err);
    let mut message = err.to_string();
    for path in private_paths {
        let path = path.to_string_lossy();
        if !path.is_empty() {
            message = message.replace(path.as_ref(), "<path to cached source>");
        }
    }
    match code {
        Code::Internal | Code::DeadlineExceeded => {
            tracing::error!(code = ?code, error = %message, "request failed")
        }
        _ => tracing::info!(code = ?code, error = %message, "request refused"),
    }
    Status::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_codes_and_scrubs_paths() {
        let err = pipeline::Error::Source(source::Error::AppPathDoesNotExist { path: "x".into() });
        let status = to_status(err, &[]);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "x: app path does not exist");

        let err = pipeline::Error::Git(git::Error::Store {
            repo_url: "file:///r".into(),
            message: "cannot open /tmp/manifold-abc/repos/1.git".into(),
        });
        let status = to_status(err, &[PathBuf::from("/tmp/manifold-abc")]);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("/tmp/manifold-abc"));

        let err = pipeline::Error::Render(render::Error::Unparsable {
            file: "a.yaml".into(),
            message: "bad".into(),
        });
        assert_eq!(to_status(err, &[]).code(), Code::FailedPrecondition);
        let err = pipeline::Error::Git(git::Error::RevisionNotFound {
            repo_url: "u".into(),
            revision: "nope".into(),
        });
        let status = to_status(err, &[]);
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("'nope'"));
    }
}
