-- Where other nodes reach a node's agents (store.Node.Address) and which
-- agent classes it hosts (a JSON array of class names), written by the
-- node's agent runtime with AdvertiseNode; the heartbeat leaves them alone.
ALTER TABLE agentflow_nodes ADD COLUMN address TEXT NOT NULL DEFAULT '';
ALTER TABLE agentflow_nodes ADD COLUMN agent_classes TEXT NOT NULL DEFAULT '[]';
