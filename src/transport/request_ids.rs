//! The ids of one client's requests in flight, for both transports (a
//! stdio connection, an HTTP session): a request reusing the id of one
//! still in flight is refused and not run (rmcp would run both and route
//! one answer), an id is free again as its answer leaves, and a cancelled
//! request's id is free at once (rmcp drops its answer).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, JsonRpcMessage, RequestId, ServerJsonRpcMessage,
};

use crate::rmcp_gaps::jsonrpc::ErrorAnswer;

/// The ids in flight. Cheap to clone: clones share the set.
#[derive(Debug, Clone, Default)]
pub struct RequestIds(Arc<Mutex<HashSet<RequestId>>>);

impl RequestIds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<RequestId>> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Records `id` as in flight, or refuses it when it already is.
    pub fn begin(&self, id: &RequestId) -> Result<(), ErrorAnswer> {
        if self.lock().insert(id.clone()) {
            Ok(())
        } else {
            Err(ErrorAnswer::duplicate_id(id.clone()))
        }
    }

    /// `id` is no longer in flight.
    pub fn end(&self, id: &RequestId) {
        self.lock().remove(id);
    }

    /// What `message` from the client means for the ids: a request's is
    /// begun (or refused), a cancelled request's is ended.
    pub fn received(&self, message: &ClientJsonRpcMessage) -> Result<(), ErrorAnswer> {
        match message {
            JsonRpcMessage::Request(request) => self.begin(&request.id),
            JsonRpcMessage::Notification(notification) => {
                if let ClientNotification::CancelledNotification(cancelled) =
                    &notification.notification
                {
                    if let Some(id) = &cancelled.params.request_id {
                        self.end(id);
                    }
                }
                Ok(())
            }
            JsonRpcMessage::Response(_) | JsonRpcMessage::Error(_) => Ok(()),
        }
    }

    /// What `message` to the client means for the ids: an answer ends its
    /// request's. Call before the answer is written, so a client that
    /// reads it and reuses the id at once is never refused.
    pub fn sending(&self, message: &ServerJsonRpcMessage) {
        if let Some(id) = answered(message) {
            self.end(id);
        }
    }
}

/// The request `message` answers, if it is an answer.
pub fn answered(message: &ServerJsonRpcMessage) -> Option<&RequestId> {
    match message {
        JsonRpcMessage::Response(response) => Some(&response.id),
        JsonRpcMessage::Error(error) => error.id.as_ref(),
        JsonRpcMessage::Request(_) | JsonRpcMessage::Notification(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_in_flight_is_refused_until_it_ends() {
        let ids = RequestIds::default();
        let id = RequestId::Number(7);
        ids.begin(&id).unwrap();
        let refused = ids.begin(&id).unwrap_err();
        assert!(refused.error.message.contains("7"), "{:?}", refused.error);
        ids.end(&id);
        ids.begin(&id).unwrap();
    }
}
