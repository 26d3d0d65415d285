//! The glue between hickory-server and the pure resolver: checks the request, takes the
//! current table snapshot, counts outcomes and sends the answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::DNSClass;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::sync::watch;

use super::DnsStats;
use super::resolve::{Answer, Zone, resolve};
use crate::table::ServiceTable;

/// Query counters shared between the handler and [`super::DnsServer::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    queries: AtomicU64,
    nxdomain: AtomicU64,
    refused: AtomicU64,
}

impl Counters {
    fn record(&self, code: ResponseCode) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        if code == ResponseCode::NXDomain {
            self.nxdomain.fetch_add(1, Ordering::Relaxed);
        } else if code == ResponseCode::Refused {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> DnsStats {
        DnsStats {
            queries: self.queries.load(Ordering::Relaxed),
            nxdomain: self.nxdomain.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// Answers every request from the latest table published on the watch channel.
pub(crate) struct Handler {
    zone: Zone,
    table: watch::Receiver<Arc<ServiceTable>>,
    counters: Arc<Counters>,
}

impl Handler {
    pub(crate) fn new(
        zone: Zone,
        table: watch::Receiver<Arc<ServiceTable>>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            zone,
            table,
            counters,
        }
    }

    /// The answer for a request, or the response code that rejects it.
    fn answer(&self, request: &Request) -> Answer {
        // hickory-server drops responses before they get here; UPDATE, NOTIFY... are not served.
        if request.metadata.op_code != OpCode::Query {
            return Answer::error(ResponseCode::NotImp);
        }
        let [query] = request.queries.queries() else {
            return Answer::error(ResponseCode::FormErr);
        };
        if query.query_class() != DNSClass::IN {
            return Answer::error(ResponseCode::Refused);
        }
        // Clone the Arc and let go of the channel at once: the catalog is never held up.
        let table = Arc::clone(&self.table.borrow());
        resolve(
            &self.zone,
            &table,
            query.original().name(),
            query.query_type(),
        )
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let answer = self.answer(request);
        self.counters.record(answer.code);
        if let [query] = request.queries.queries() {
            tracing::debug!(
                src = %request.src(),
                name = %query.name(),
                qtype = %query.query_type(),
                code = %answer.code,
                answers = answer.answers.len(),
                "DNS query"
            );
        }

        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(512));
            edns
        });
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = answer.code;
        metadata.authoritative = answer.authoritative;
        metadata.recursion_available = false;

        let mut answers = answer.answers;
        fastrand::shuffle(&mut answers);
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            answers.iter(),
            answer.authority.iter(),
            std::iter::empty(),
            answer.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(src = %request.src(), %error, "cannot send DNS response");
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
