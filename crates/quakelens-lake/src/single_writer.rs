//! For S3-compatible stores without conditional puts: a create-only put becomes "look, then
//! put". Safe with one writer per table at a time (the `AWS_S3_ALLOW_UNSAFE_RENAME=true`
//! setting); with two, both may see the version free and one commit is lost.

use std::fmt;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    Result,
};

use deltalake::logstore::ObjectStoreRef;

#[derive(Debug)]
pub(crate) struct CheckThenPut {
    inner: ObjectStoreRef,
}

impl CheckThenPut {
    pub(crate) fn new(inner: ObjectStoreRef) -> Self {
        Self { inner }
    }

    async fn exists(&self, location: &Path) -> Result<bool> {
        match self.inner.head(location).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl fmt::Display for CheckThenPut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckThenPut({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CheckThenPut {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> Result<PutResult> {
        if matches!(opts.mode, PutMode::Create) {
            if self.exists(location).await? {
                return Err(object_store::Error::AlreadyExists {
                    path: location.to_string(),
                    source: "the object exists (checked before writing)".into(),
                });
            }
            opts.mode = PutMode::Overwrite;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, mut options: CopyOptions) -> Result<()> {
        if matches!(options.mode, CopyMode::Create) {
            if self.exists(to).await? {
                return Err(object_store::Error::AlreadyExists {
                    path: to.to_string(),
                    source: "the object exists (checked before copying)".into(),
                });
            }
            options.mode = CopyMode::Overwrite;
        }
        self.inner.copy_opts(from, to, options).await
    }
}
