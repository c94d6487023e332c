//! Notifications (`[notify]`): pings and the webhook reach a local HTTP server; an endpoint
//! that is down, slow or answers 500 costs a warning and never changes the exit code of the
//! backup it is about; and no payload carries a secret.
