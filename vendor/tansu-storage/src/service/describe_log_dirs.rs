// Copyright ⓒ 2024-2025 Peter Morgan <peter.james.morgan@gmail.com>
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

// Tollgate patch: tansu did not implement DescribeLogDirs; the gateway measures the bytes each
// partition holds with it (for billing and the storage quota) instead of estimating them.

use rama::{Context, Service};
use tansu_sans_io::{
    ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, ErrorCode,
    describe_log_dirs_response::DescribeLogDirsResult,
};
use tracing::{instrument, warn};

use crate::{Error, Result, Storage};

/// A [`Service`] using [`Storage`] as [`Context`] taking [`DescribeLogDirsRequest`] returning [`DescribeLogDirsResponse`].
///
/// Storage is one log directory. An engine that cannot describe it is answered with
/// [`ErrorCode::KafkaStorageError`] for the directory, rather than an error that would close
/// the connection.
/// ```
/// use rama::{Context, Layer as _, Service, layer::MapStateLayer};
/// use tansu_sans_io::{DescribeLogDirsRequest, ErrorCode};
/// use tansu_storage::{DescribeLogDirsService, Error, StorageContainer};
/// use url::Url;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Error> {
/// let storage = StorageContainer::builder()
///     .cluster_id("tansu")
///     .node_id(111)
///     .advertised_listener(Url::parse("tcp://localhost:9092")?)
///     .storage(Url::parse("memory://tansu/")?)
///     .build()
///     .await?;
///
/// let service = MapStateLayer::new(|_| storage).into_layer(DescribeLogDirsService);
///
/// let response = service
///     .serve(Context::default(), DescribeLogDirsRequest::default())
///     .await?;
///
/// let results = response.results.unwrap_or_default();
/// assert_eq!(1, results.len());
/// assert_eq!(
///     ErrorCode::KafkaStorageError,
///     ErrorCode::try_from(results[0].error_code)?
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct DescribeLogDirsService;

impl ApiKey for DescribeLogDirsService {
    const KEY: i16 = DescribeLogDirsRequest::KEY;
}

impl<G> Service<G, DescribeLogDirsRequest> for DescribeLogDirsService
where
    G: Storage,
{
    type Response = DescribeLogDirsResponse;
    type Error = Error;

    #[instrument(skip(ctx, req))]
    async fn serve(
        &self,
        ctx: Context<G>,
        req: DescribeLogDirsRequest,
    ) -> Result<Self::Response, Self::Error> {
        let result = ctx
            .state()
            .describe_log_dirs(req.topics.as_deref())
            .await
            .unwrap_or_else(|error| {
                warn!(?error);

                DescribeLogDirsResult::default()
                    .error_code(ErrorCode::KafkaStorageError.into())
                    .log_dir("tansu".into())
                    .topics(Some([].into()))
                    .total_bytes(Some(-1))
                    .usable_bytes(Some(-1))
            });

        Ok(DescribeLogDirsResponse::default()
            .throttle_time_ms(0)
            .error_code(Some(ErrorCode::None.into()))
            .results(Some([result].into())))
    }
}
