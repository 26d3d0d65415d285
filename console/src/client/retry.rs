//! Calls the agent refused for now are sent again after the time it names, so a script's
//! loop of changes slows down to the agent's rate limit instead of failing.
//!
//! The agent marks a refusal that is safe to repeat (the call was refused before anything
//! ran: a client over its rate limit, no stream place free) with gRPC's retry pushback,
//! `grpc-retry-pushback-ms` (gRFC A6), on a ResourceExhausted status. Only such a refusal is
//! retried, only while the waits add up to at most the budget, and never once a reply has
//! started. Every request of the API is a single message, so its body is kept and resent.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tower_service::Service;

/// The metadata key carrying how long to wait before trying again, in milliseconds.
pub const PUSHBACK_KEY: &str = "grpc-retry-pushback-ms";

/// How long all the waits of one call may add up to, by default.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

/// gRPC's ResourceExhausted, as it appears in the `grpc-status` header.
const RESOURCE_EXHAUSTED: &str = "8";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether a refused call is sent again, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Retry calls the agent asks to be retried while the waits add up to at most this.
    Within(Duration),
    /// Never retry (`--no-retry`): the refusal is the answer.
    Never,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::Within(DEFAULT_BUDGET)
    }
}

/// How long to wait before sending again a call whose reply began with `headers`, when
/// `waited` has been spent on it already; `None` when the reply is the answer.
pub fn pushback(
    headers: &http::HeaderMap,
    waited: Duration,
    policy: RetryPolicy,
) -> Option<Duration> {
    let RetryPolicy::Within(budget) = policy else {
        return None;
    };
    if headers.get("grpc-status")?.to_str().ok()? != RESOURCE_EXHAUSTED {
        return None;
    }
    let millis: u64 = headers
        .get(PUSHBACK_KEY)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let wait = Duration::from_millis(millis.max(1));
    (waited + wait <= budget).then_some(wait)
}

/// A channel that sends a refused call again (see the module documentation).
#[derive(Debug, Clone)]
pub struct Retrying<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S> Retrying<S> {
    /// Wraps `inner`, retrying by `policy`.
    pub fn new(inner: S, policy: RetryPolicy) -> Retrying<S> {
        Retrying { inner, policy }
    }
}

impl<S> Service<http::Request<Body>> for Retrying<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The ready service answers this call; the clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let policy = self.policy;
        Box::pin(async move {
            if policy == RetryPolicy::Never {
                return inner.call(request).await.map_err(Into::into);
            }
            let (head, body) = request.into_parts();
            let body: Bytes = body.collect().await?.to_bytes();
            let mut waited = Duration::ZERO;
            loop {
                let attempt =
                    http::Request::from_parts(head.clone(), Body::new(Full::new(body.clone())));
                let response = inner.call(attempt).await.map_err(Into::into)?;
                let Some(wait) = pushback(response.headers(), waited, policy) else {
                    return Ok(response);
                };
                // A little jitter, so clients refused together do not return together.
                let wait = wait + wait.mul_f64(fastrand::f64() * 0.1);
                tokio::time::sleep(wait).await;
                waited += wait;
                std::future::poll_fn(|cx| inner.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_a_refusal_with_a_pushback_is_retried_within_the_budget() {
        let policy = RetryPolicy::Within(Duration::from_secs(2));
        let refused = headers(&[("grpc-status", "8"), (PUSHBACK_KEY, "250")]);
        assert_eq!(
            pushback(&refused, Duration::ZERO, policy),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            pushback(&refused, Duration::from_millis(1800), policy),
            None,
            "past the budget the refusal is the answer"
        );
        assert_eq!(pushback(&refused, Duration::ZERO, RetryPolicy::Never), None);
        let no_pushback = headers(&[("grpc-status", "8")]);
        assert_eq!(pushback(&no_pushback, Duration::ZERO, policy), None);
        let other = headers(&[("grpc-status", "14"), (PUSHBACK_KEY, "10")]);
        assert_eq!(pushback(&other, Duration::ZERO, policy), None);
        let bad = headers(&[("grpc-status", "8"), (PUSHBACK_KEY, "-1")]);
        assert_eq!(
            pushback(&bad, Duration::ZERO, policy),
            None,
            "gRFC A6: do not retry"
        );
        let ok = headers(&[("content-type", "application/grpc")]);
        assert_eq!(pushback(&ok, Duration::ZERO, policy), None);
    }
}
