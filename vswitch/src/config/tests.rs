use super::*;

const FULL: &str = r#"
    [switch]
    pmd_cores = [2, 3]
    main_core = 1
    eal_args = ["--log-level=8"]
    hugepages = "off"
    memory_mb = 512
    control_socket = "/tmp/v.ctl"
    socket_dir = "/tmp/vs"
    fdb_size = 1024
    fdb_aging_secs = 60
    vhost_retries = 0
    metrics = "127.0.0.1:9478"
    pmd_sleep_max_us = 500
    pmd_auto_lb = true
    pmd_auto_lb_load_threshold = 70
    pmd_auto_lb_rebal_interval = 5
    zero_copy = false
    zero_copy_min_bytes = 1000
    zero_copy_in_flight = 64
    controller = "tcp:127.0.0.1:6653"

    [[port]]
    name = "uplink"
    type = "dpdk"
    devargs = "0000:01:00.0"
    rx_queues = 2
    rxq_pmd = [2, 3]
    rx_desc = 512
    mtu = 9000
    trunk = [10, 20]

    [[port]]
    name = "vm1"
    type = "vhost-user"
    mode = "server"
    path = "vm1.sock"
    owner = "libvirt-qemu"
    group = "kvm"
    permissions = "0660"
    datapath = "copy-once"
    vlan = 10

    [[port]]
    name = "vm2"
    type = "vhost-user"
    path = "/var/run/other/vm2.sock"
"#;

fn parse_x(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("configs/x.toml"))
}

fn assert_err<T: fmt::Debug>(result: Result<T, ConfigError>, want: &str) {
    let msg = result.unwrap_err().to_string();
    assert!(msg.starts_with(want), "gave: {msg}\nwant: {want}..");
}

fn vhost(mode: VhostMode, path: &str, datapath: Datapath) -> PortKind {
    let (owner, group, permissions, path) = (None, None, None, path.into());
    PortKind::VhostUser {
        mode,
        path,
        owner,
        group,
        permissions,
        datapath,
    }
}

#[test]
fn full_example_parses_with_defaults_filled() {
    let port = |name: &str, kind, mtu, vlan_mode, rx_queues, rxq_pmd| PortConfig {
        name: name.into(),
        kind,
        mtu,
        vlan_mode,
        rx_queues,
        rxq_pmd,
        offloads: true,
        mac_limit: None,
        packed_rings: true,
        in_order: true,
        ingress_policing_rate: 0,
        ingress_policing_burst: 0,
    };
    let dpdk = PortKind::Dpdk {
        devargs: "0000:01:00.0".into(),
        rx_desc: 512,
        tx_desc: 1024,
    };
    let vm1 = PortKind::VhostUser {
        mode: VhostMode::Server,
        path: "/tmp/vs/vm1.sock".into(),
        owner: Some("libvirt-qemu".into()),
        group: Some("kvm".into()),
        permissions: Some(0o660),
        datapath: Datapath::CopyOnce,
    };
    let vm2 = vhost(
        VhostMode::Client,
        "/var/run/other/vm2.sock",
        Datapath::RteVhost,
    );
    let expected = Config {
        switch: SwitchConfig {
            pmd_cores: vec![2, 3],
            main_core: 1,
            eal_args: vec!["--log-level=8".into()],
            hugepages: Hugepages::Off,
            memory_mb: 512,
            control_socket: "/tmp/v.ctl".into(),
            socket_dir: "/tmp/vs".into(),
            state_file: "configs/x.toml.state.json".into(),
            fdb_size: 1024,
            fdb_aging_secs: 60,
            vhost_retries: 0,
            metrics: Some("127.0.0.1:9478".parse().unwrap()),
            openflow_socket: "/tmp/vs/br0.mgmt".into(),
            controller: Some("tcp:127.0.0.1:6653".into()),
            pmd: PmdConfig {
                sleep_max_us: 500,
                auto_lb: AutoLb { enabled: true, load_threshold: 70, improvement_threshold: 25, rebal_interval: std::time::Duration::from_secs(300) },
            },
            zero_copy: false,
            zero_copy_min_bytes: 1000,
            zero_copy_in_flight: 64,
        },
        ports: vec![
            port(
                "uplink",
                dpdk,
                9000,
                VlanConfig::Trunk(vec![10, 20]),
                2,
                Some(vec![2, 3]),
            ),
            port("vm1", vm1, 1500, VlanConfig::Access(10), 1, None),
            port("vm2", vm2, 1500, VlanConfig::Access(1), 1, None),
        ],
    };
    assert_eq!(parse_x(FULL).unwrap(), expected);

    let defaults = SwitchConfig {
        pmd_cores: vec![1],
        main_core: 0,
        eal_args: vec![],
        hugepages: Hugepages::Auto,
        memory_mb: 1024,
        control_socket: "/run/vswitchd/vswitchd.ctl".into(),
        socket_dir: "/run/vswitch".into(),
        state_file: "configs/x.toml.state.json".into(),
        fdb_size: 8192,
        fdb_aging_secs: 300,
        vhost_retries: 8,
        metrics: None,
        openflow_socket: "/run/vswitch/br0.mgmt".into(),
        controller: None,
        pmd: PmdConfig::default(),
        zero_copy: true,
        zero_copy_min_bytes: 1500,
        zero_copy_in_flight: 0,
    };
    let ports = vec![];
    assert_eq!(
        parse_x("").unwrap(),
        Config {
            switch: defaults,
            ports
        }
    );
}

/// `toml (; = newline) | field | reason`; VM and NIC stand for a valid port.
const ERROR_CASES: &str = r#"
[sw]                                    | sw                      | unknown field `sw`
port = 3                                | port                    | invalid type: integer `3`
[switch];foo = 1                        | switch.foo              | unknown field `foo`
[switch];fdb_size = 8                   | switch.fdb_size         | 8 is out of range 16..=1048576
[switch];fdb_aging_secs = 0             | switch.fdb_aging_secs   | 0 is out of range 1..=1000000
[switch];vhost_retries = 65             | switch.vhost_retries    | 65 is out of range 0..=64
[switch];zero_copy = 1                  | switch.zero_copy        | invalid type: integer `1`, expected a boolean
[switch];zero_copy_in_flight = 40000    | switch.zero_copy_in_flight | 40000 is out of range 0..=32768
[switch];zero_copy_min_bytes = -1       | switch.zero_copy_min_bytes | -1 is out of range 0..=65535
[switch];pmd_cores = []                 | switch.pmd_cores        | must list at least one core
[switch];pmd_cores = [0]                | switch.pmd_cores        | core 0 is also main_core
[switch];main_core = "0"                | switch.main_core        | invalid type: string "0", expected an integer
[switch];hugepages = "yes"              | switch.hugepages        | "yes" is not one of "auto", "on", "off"
[switch];socket_dir = "run"             | switch.socket_dir       | run is not an absolute path
[switch];controller = "127.0.0.1:6653"  | switch.controller       | only tcp:IP:PORT controllers are supported
[switch];controller = "tcp:ctl:6653"    | switch.controller       | not tcp:IP:PORT
[switch];pmd_sleep_max_us = 10001       | switch.pmd_sleep_max_us | 10001 is out of range 0..=10000
[switch];pmd_sleep_max_us = -1          | switch.pmd_sleep_max_us | -1 is out of range 0..=10000
[switch];pmd_auto_lb = 1                | switch.pmd_auto_lb      | invalid type: integer `1`, expected a boolean
[switch];pmd_auto_lb_load_threshold = 101 | switch.pmd_auto_lb_load_threshold | 101 is out of range 0..=100
[switch];pmd_auto_lb_improvement_threshold = -5 | switch.pmd_auto_lb_improvement_threshold | -5 is out of range 0..=100
[switch];pmd_auto_lb_rebal_interval = 0 | switch.pmd_auto_lb_rebal_interval | 0 is out of range 1..=20000
VM;mtu = 9500                           | port[0] "vm1".mtu       | 9500 is out of range 68..=9000
VM;mtu = "big"                          | port[0] "vm1".mtu       | invalid type: string "big"
VM;mtu = nan                            | port[0] "vm1".mtu       | invalid type
VM;colour = 1                           | port[0] "vm1".colour    | unknown field `colour`
[[port]];type = "dpdk"                  | port[0].name            | missing required field
[[port]];name = "x"                     | port[0] "x".type        | missing required field
[[port]];name = "x";type = "tap"        | port[0] "x".type        | "tap" is not one of "dpdk", "vhost-user"
[[port]];name = "x";type = "dpdk"       | port[0] "x".devargs     | missing required field
[[port]];name = "x";type = "vhost-user" | port[0] "x".path        | missing required field
[[port]];name = "a b"                   | port[0] "a b".name      | "a b" is not 1 to 15 characters
[[port]];name = "sixteen_chars_xx"      | port[0] "sixteen_chars_xx".name | is not 1 to 15 characters
[[port]];name = ""                      | port[0] "".name         | must not be empty
VM;VM                                   | port[1] "vm1".name      | duplicate port name "vm1"
VM;[[port]];name = "vm2";type = "vhost-user";path = "/run/vswitch/vm1.sock" | port[1] "vm2".path | socket /run/vswitch/vm1.sock is also used by port "vm1"
VM;vlan = 10;trunk = [20]               | port[0] "vm1".vlan      | vlan and trunk are mutually exclusive
VM;vlan = 4095                          | port[0] "vm1".vlan      | 4095 is out of range 1..=4094
VM;trunk = []                           | port[0] "vm1".trunk     | must list a VLAN
VM;trunk = [10, 10]                     | port[0] "vm1".trunk     | 10 is listed twice
VM;trunk = [0]                          | port[0] "vm1".trunk     | 0 is out of range 1..=4094
VM;devargs = "x"                        | port[0] "vm1".devargs   | not allowed for type = "vhost-user"
VM;rx_desc = 512                        | port[0] "vm1".rx_desc   | not allowed for type = "vhost-user"
NIC;mode = "client"                     | port[0] "nic".mode      | not allowed for type = "dpdk"
NIC;path = "p"                          | port[0] "nic".path      | not allowed for type = "dpdk"
NIC;owner = "root"                      | port[0] "nic".owner     | not allowed for type = "dpdk"
VM;owner = "root"                       | port[0] "vm1".owner     | not allowed with mode = "client"
VM;group = "kvm"                        | port[0] "vm1".group     | not allowed with mode = "client"
VM;permissions = "0660"                 | port[0] "vm1".permissions | not allowed with mode = "client"
VM;mode = "server";permissions = "0999" | port[0] "vm1".permissions | "0999" is not an octal mode
VM;mode = "serve"                       | port[0] "vm1".mode      | "serve" is not one of "client", "server"
VM;datapath = "zero"                    | port[0] "vm1".datapath  | "zero" is not one of "rte_vhost", "copy-once"
NIC;rx_desc = 1000                      | port[0] "nic".rx_desc   | 1000 is not a power of two
NIC;tx_desc = 8192                      | port[0] "nic".tx_desc   | 8192 is out of range 64..=4096
NIC;rx_queues = 17                      | port[0] "nic".rx_queues | 17 is out of range 1..=16
NIC;rx_queues = 2;rxq_pmd = [1]         | port[0] "nic".rxq_pmd   | has 1 entries but rx_queues is 2
NIC;rxq_pmd = [3]                       | port[0] "nic".rxq_pmd   | core 3 is not in switch.pmd_cores [1]
VM;ingress_policing_rate = -1           | port[0] "vm1".ingress_policing_rate | -1 is out of range 0..=4294967295
VM;ingress_policing_burst = 4294967296  | port[0] "vm1".ingress_policing_burst | 4294967296 is out of range 0..=4294967295
VM;ingress_policing_rate = "1M"         | port[0] "vm1".ingress_policing_rate | invalid type: string "1M"
"#;

#[test]
fn errors_name_file_field_and_reason() {
    let vm = r#"[[port]];name = "vm1";type = "vhost-user";path = "vm1.sock""#;
    let nic = r#"[[port]];name = "nic";type = "dpdk";devargs = "0000:01:00.0""#;
    let toml = |t: &str| t.replace("VM", vm).replace("NIC", nic).replace(';', "\n");
    for case in ERROR_CASES.lines().filter(|l| !l.is_empty()) {
        let [text, field, reason] = [0, 1, 2].map(|i| case.split('|').nth(i).unwrap().trim());
        let msg = parse_x(&toml(text)).unwrap_err().to_string();
        let ok = msg.starts_with(&format!("configs/x.toml: {field}: ")) && msg.contains(reason);
        assert!(ok, "{text}\n  gave: {msg}\n  want: {field}: ..{reason}..");
    }
    let msg = parse_x(&toml("VM;mtu = 9500")).unwrap_err().to_string();
    let want = r#"configs/x.toml: port[0] "vm1".mtu: 9500 is out of range 68..=9000"#;
    assert_eq!(msg, want);
    let syntax = "configs/x.toml: TOML parse error at line 2, column 7";
    assert_err(parse_x("[switch]\nmtu = "), syntax);
    let missing = Path::new("/nonexistent/x.toml");
    assert_err(load(missing), "/nonexistent/x.toml: cannot read: ");
}

#[test]
fn port_from_json_shares_the_rules() {
    let cfg = parse_x(FULL).unwrap();
    let v = json!({ "name": "vm9", "type": "vhost-user", "path": "vm9.sock", "rxq_pmd": [3] });
    let port = port_from_json(&v, &cfg.switch, "port add").unwrap();
    let kind = vhost(VhostMode::Client, "/tmp/vs/vm9.sock", Datapath::RteVhost);
    let (vlan_mode, rxq_pmd) = (VlanConfig::Access(1), Some(vec![3]));
    let expected = PortConfig {
        name: "vm9".into(),
        kind,
        mtu: 1500,
        vlan_mode,
        rx_queues: 1,
        rxq_pmd,
        offloads: true,
        mac_limit: None,
        packed_rings: true,
        in_order: true,
        ingress_policing_rate: 0,
        ingress_policing_burst: 0,
    };
    assert_eq!(port, expected);
    let mut cfg2 = cfg.clone();
    cfg2.add_port(port.clone()).unwrap();
    cfg2.validate().unwrap();
    cfg2.ports.push(port.clone());
    assert_err(cfg2.validate(), "port[4] \"vm9\".name: duplicate port name");
    cfg2.ports.pop();
    assert_err(
        cfg2.add_port(port),
        "port \"vm9\".name: duplicate port name \"vm9\"",
    );

    let bad = r#"
        {"name": "vm9", "type": "dpdk", "devargs": "x", "path": "p"} | port add "vm9".path: not allowed
        {"name": "vm9", "type": "dpdk", "mtu": "9000"} | port add "vm9".mtu: invalid type: string
        {"name": "vm9", "type": "dpdk", "speed": 1}    | port add "vm9".speed: unknown field
        {"type": "dpdk"}                               | port add.name: missing required field
        ["vm9"]                                        | port add: expected a JSON object
    "#;
    for case in bad.lines().filter(|l| l.contains('|')) {
        let (v, want) = case.split_once('|').unwrap();
        let v: Value = serde_json::from_str(v).unwrap();
        assert_err(port_from_json(&v, &cfg.switch, "port add"), want.trim());
    }
}

#[test]
fn state_round_trip() {
    let dir = std::env::temp_dir().join(format!("vswitch-config-test-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let path = dir.join("sub/x.state.json");
    assert_eq!(load_state(&path).unwrap(), State::default());
    let mut cfg = parse_x(FULL).unwrap();
    cfg.switch.state_file = path.clone();
    let v = json!({ "name": "vm9", "type": "vhost-user", "path": "vm9.sock", "mode": "server",
                    "permissions": "0600", "owner": "0", "trunk": [5, 6], "mtu": 9000 });
    let added = port_from_json(&v, &cfg.switch, "port add").unwrap();
    let state = State {
        added: vec![added.clone()],
        deleted: vec!["vm1".into(), "gone".into()],
    };
    save_state(&path, &State::default()).unwrap();
    save_state(&path, &state).unwrap();
    assert_eq!(load_state(&path).unwrap(), state);
    let files: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["x.state.json"], "no temporary file is left behind");

    let merged = cfg.clone().with_state(&state).unwrap();
    let names: Vec<_> = merged.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["uplink", "vm2", "vm9"]);
    assert_eq!(merged.ports[2], added);

    let prefix = format!("{}: added[0] ", path.display());
    let dup = State {
        added: vec![cfg.ports[1].clone()],
        deleted: vec![],
    };
    let want = format!("{prefix}\"vm1\".name: duplicate port name");
    assert_err(cfg.clone().with_state(&dup), &want);
    let mut bad = State {
        added: vec![added],
        deleted: vec![],
    };
    bad.added[0].mtu = 10_000;
    let want = format!("{prefix}\"vm9\".mtu: 10000 is out of range");
    assert_err(cfg.clone().with_state(&bad), &want);

    fs::write(&path, "{ nope").unwrap();
    let want = format!("{}: key must be a string", path.display());
    assert_err(load_state(&path), &want);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn example_configs_parse() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs");
    let default = load(&Path::new(dir).join("default.toml")).unwrap();
    let names: Vec<_> = default.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["vm1", "vm2", "host"]);
    assert_eq!(default.switch.metrics, Some("127.0.0.1:9478".parse().unwrap()), "the default config serves /metrics");
    let vm_datapaths: Vec<_> = default.ports.iter().filter_map(|p| match &p.kind {
        PortKind::VhostUser { datapath, .. } => Some(*datapath),
        _ => None,
    }).collect();
    assert_eq!(vm_datapaths, [Datapath::CopyOnce, Datapath::CopyOnce], "the default config runs copy-once VM ports");
    let nic = load(&Path::new(dir).join("nic-uplink.toml")).unwrap();
    assert_eq!(nic.ports[0].vlan_mode, VlanConfig::Trunk(vec![10, 20]));
    assert_eq!(nic.ports[0].rxq_pmd, Some(vec![1, 2]));
}

#[test]
fn regression_socket_paths_longer_than_sun_path_are_refused() {
    let long = "x".repeat(100);
    let text = format!("[switch]\npmd_cores = [1]\n[[port]]\nname = \"vm1\"\ntype = \"vhost-user\"\npath = \"{long}.sock\"\n");
    let e = parse_x(&text).unwrap_err().to_string();
    assert!(e.contains(".path: ") && e.contains("longer than a unix socket path"), "{e}");
    let text = format!("[switch]\npmd_cores = [1]\ncontrol_socket = \"/run/{long}/c.sock\"\n");
    let e = parse_x(&text).unwrap_err().to_string();
    assert!(e.contains("control_socket: /run/") && e.contains("longer than"), "{e}");
}

#[test]
fn regression_a_port_added_at_run_time_keeps_offloads_and_mac_limit_on_replay() {
    let cfg = parse_x(FULL).unwrap();
    let v = json!({ "name": "vm9", "type": "vhost-user", "path": "vm9.sock", "offloads": false, "mac_limit": 8,
                    "ingress_policing_rate": 10000, "ingress_policing_burst": 1000 });
    let added = port_from_json(&v, &cfg.switch, "port add").unwrap();
    assert_eq!((added.offloads, added.mac_limit), (false, Some(8)));
    assert_eq!((added.ingress_policing_rate, added.ingress_policing_burst), (10000, 1000));
    let merged = cfg.with_state(&State { added: vec![added.clone()], deleted: vec![] }).unwrap();
    assert_eq!(merged.ports.last(), Some(&added), "replayed as added");
}

#[test]
fn metrics_address_must_be_an_ip_and_port() {
    for (text, want) in [("[::1]:0", "[::1]:0"), ("0.0.0.0:9478", "0.0.0.0:9478")] {
        let cfg = parse_x(&format!("[switch]\nmetrics = \"{text}\"\n")).unwrap();
        assert_eq!(cfg.switch.metrics, Some(want.parse().unwrap()));
    }
    for bad in ["localhost:9478", "127.0.0.1", "127.0.0.1:99999", ":9478"] {
        let e = parse_x(&format!("[switch]\nmetrics = \"{bad}\"\n")).unwrap_err().to_string();
        assert!(e.starts_with("configs/x.toml: switch.metrics: ") && e.contains("is not an address and port"), "{bad}: {e}");
    }
    assert_err(parse_x("[switch]\nmetrics = 9478\n"), "configs/x.toml: switch.metrics: invalid type");
    assert_err(parse_x("[switch]\nmetrics = \"\"\n"), "configs/x.toml: switch.metrics: must not be empty");
}

const VXLAN: &str = r#"
    [[port]]
    name = "tun42"
    type = "vxlan"
    vni = 42
    local_ip = "10.0.0.1"
    remote_ips = ["10.0.0.2", "10.0.0.3"]
    underlay = "uplink"
    vlan = 10
"#;

#[test]
fn vxlan_ports_name_a_dpdk_underlay() {
    let cfg = parse_x(&format!("{FULL}{VXLAN}")).unwrap();
    let tun = cfg.ports.last().unwrap();
    let want = PortKind::Vxlan {
        vni: 42,
        local_ip: "10.0.0.1".parse().unwrap(),
        remote_ips: vec!["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()],
        underlay: "uplink".into(),
    };
    assert_eq!((&tun.kind, &tun.vlan_mode), (&want, &VlanConfig::Access(10)));
    // Through the state file as through the config file.
    let state = State { added: vec![tun.clone()], deleted: vec!["tun42".into()] };
    let merged = cfg.clone().with_state(&state).unwrap();
    assert_eq!(merged.ports.last(), Some(tun));
    cfg.validate().unwrap();

    let cases = [
        ("vni = 42", "vni = 16777216", "\"tun42\".vni: 16777216 is out of range"),
        ("vni = 42\n", "", "\"tun42\".vni: missing required field"),
        ("\"10.0.0.1\"", "\"10.0.0.256\"", "\"tun42\".local_ip: \"10.0.0.256\" is not a unicast IPv4"),
        ("\"10.0.0.3\"]", "\"224.0.0.1\"]", "\"tun42\".remote_ips: \"224.0.0.1\" is not a unicast IPv4"),
        ("\"10.0.0.3\"]", "\"10.0.0.2\"]", "\"tun42\".remote_ips: 10.0.0.2 is listed twice"),
        ("\"10.0.0.3\"]", "\"10.0.0.1\"]", "\"tun42\".remote_ips: 10.0.0.1 is the local_ip"),
        ("[\"10.0.0.2\", \"10.0.0.3\"]", "[]", "\"tun42\".remote_ips: must list at least one"),
        ("\"uplink\"", "\"vm1\"", "\"tun42\".underlay: port \"vm1\" is of type \"vhost-user\", not \"dpdk\""),
        ("\"uplink\"", "\"nope\"", "\"tun42\".underlay: no port named \"nope\""),
        ("vlan = 10", "path = \"p\"", "\"tun42\".path: not allowed for type = \"vxlan\""),
    ];
    for (from, to, want) in cases {
        let text = format!("{FULL}{}", VXLAN.replacen(from, to, 1));
        assert_err(parse_x(&text), &format!("configs/x.toml: port[3] {want}"));
    }
    let twice = format!("{FULL}{VXLAN}{}", VXLAN.replace("tun42", "tun43"));
    assert_err(parse_x(&twice), "configs/x.toml: port[4] \"tun43\".vni: VNI 42 on 10.0.0.1 over \"uplink\" is also port \"tun42\"'s");
    assert_err(parse_x(&format!("{FULL}{}", VXLAN.replace("vni", "devargs = \"x\"\nvni"))), "configs/x.toml: port[3] \"tun42\".devargs: not allowed for type = \"vxlan\"");
}
