//! What a SIGHUP may change. Most options take effect on a reload (the
//! control thread hands the workers a new snapshot); the ones below are
//! fixed when the relay starts, because sockets, threads, keys or the
//! directory client were built from them. A reload keeps their old values
//! and says which ones it ignored.
//!
//! C tor marks a smaller set immutable (config.c `CFLG_IMMUTABLE`) and
//! re-binds listeners on a reload; oxit's per-core listeners and
//! resolvers are made once, so their options wait for a restart.

use super::Config;

impl Config {
    /// Give every option a reload cannot apply its value from `running`,
    /// and return the names of those that differed.
    pub fn keep_restart_only(&mut self, running: &Config) -> Vec<&'static str> {
        let mut kept = Vec::new();
        macro_rules! keep {
            ($($field:ident => $name:literal),* $(,)?) => {$(
                if self.$field != running.$field {
                    self.$field = running.$field.clone();
                    kept.push($name);
                }
            )*};
        }
        keep!(
            or_ports => "ORPort",
            data_directory => "DataDirectory",
            num_cpus => "NumCPUs",
            user => "User",
            io_backend => "IoBackend",
            metrics_port => "MetricsPort",
            addresses => "Address",
            server_dns_resolv_conf_file => "ServerDNSResolvConfFile",
            server_dns_randomize_case => "ServerDNSRandomizeCase",
            dir_authorities => "DirAuthority",
            alternate_dir_authorities => "AlternateDirAuthority",
            fallback_dirs => "FallbackDir",
            use_default_fallback_dirs => "UseDefaultFallbackDirs",
            testing_tor_network => "TestingTorNetwork",
            publish_server_descriptor => "PublishServerDescriptor",
            assume_reachable => "AssumeReachable",
            family_key_directory => "FamilyKeyDirectory",
            control => "ControlPort/ControlSocket and their authentication options",
        );
        kept
    }

    /// Whether going from `old` to `self` changes what our descriptor
    /// says, so that it must be published again (C:
    /// options_transition_affects_descriptor).
    pub fn descriptor_differs(&self, old: &Config) -> bool {
        self.nickname != old.nickname
            || self.contact_info != old.contact_info
            || self.exit_relay != old.exit_relay
            || self.exit_policy != old.exit_policy
            || self.exit_policy_reject_private != old.exit_policy_reject_private
            || self.exit_policy_reject_local_interfaces != old.exit_policy_reject_local_interfaces
            || self.reduced_exit_policy != old.reduced_exit_policy
            || self.ipv6_exit != old.ipv6_exit
            || self.bandwidth_rate != old.bandwidth_rate
            || self.bandwidth_burst != old.bandwidth_burst
            || self.relay_bandwidth_rate != old.relay_bandwidth_rate
            || self.relay_bandwidth_burst != old.relay_bandwidth_burst
            || self.max_advertised_bandwidth != old.max_advertised_bandwidth
            || self.my_family != old.my_family
            || self.family_ids != old.family_ids
            || self.dir_port != old.dir_port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Config {
        Config::parse_str(s, "torrc").unwrap().0
    }

    #[test]
    fn restart_only_options_keep_their_running_values() {
        let running = parse("ORPort 9001\nNickname a\nNumCPUs 2\nExitPolicy accept *:80\n");
        let mut new = parse("ORPort 9002\nNickname b\nNumCPUs 4\nExitPolicy accept *:443\n");
        let kept = new.keep_restart_only(&running);
        assert_eq!(kept, ["ORPort", "NumCPUs"]);
        assert_eq!(new.or_ports, running.or_ports);
        assert_eq!(new.num_cpus, 2);
        // What a reload does apply stays new.
        assert_eq!(new.nickname, "b");
        assert!(new.descriptor_differs(&running));
    }

    #[test]
    fn a_log_change_does_not_republish() {
        let running = parse("ORPort 9001\nLog notice stdout\n");
        let mut new = parse("ORPort 9001\nLog info stdout\nHeartbeatPeriod 30 minutes\n");
        assert!(new.keep_restart_only(&running).is_empty());
        assert!(!new.descriptor_differs(&running));
        assert_ne!(new, running);
    }
}
