//! Names both ends of a conversation must agree on, defined once: annotations berth writes
//! on objects for another component to read, and the subprotocols of exec's WebSocket.

/// The annotation on a Node that holds its agent's CA certificate (PEM): written by the
/// agent when it registers, read by the API server to trust the agent's serving certificate.
pub const AGENT_CA_ANNOTATION: &str = "berth.dev/agent-ca";

/// The annotation on a Node that lists (a JSON array of absolute paths) the directories its
/// agent renders ConfigTemplates into (`--config-template-dir`): written by the agent when it
/// registers, read by the API server to decide whether a template's destination needs the
/// `configtemplates/anywhere` permission.
pub const CONFIG_TEMPLATE_DIRS_ANNOTATION: &str = "berth.dev/config-template-dirs";

/// The WebSocket subprotocols of exec (Kubernetes' channel protocol), newest first: asked
/// for by the CLI, chosen by the agent.
pub const EXEC_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
