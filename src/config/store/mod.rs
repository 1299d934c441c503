//! Where the configuration is kept between restarts and shared between
//! nodes: the YAML file itself on a single node (Admin API writes are saved
//! back atomically), or etcd in cluster mode (every node watches it).

pub mod cluster;
pub mod etcd_client;
pub mod file;
pub mod secrets;
