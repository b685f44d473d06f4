{
  description = "ringway: thread-per-core io_uring HTTP/1.1 service-mesh node";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.05";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: {
        default = pkgs.rustPlatform.buildRustPackage {
          pname = "ringway";
          version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).package.version;
          src = ./.;
          cargoLock.lockFile = ./Cargo.lock;
          nativeBuildInputs = [ pkgs.protobuf ];
          # `ringway --version` names the commit (build.rs; the sandbox has no git).
          RINGWAY_COMMIT = self.shortRev or self.dirtyShortRev or "unknown";
          # The integration tests start etcd and bind loopback ports; run them with tests/run.sh.
          doCheck = false;
          meta = {
            description = "Thread-per-core io_uring HTTP/1.1 service-mesh node";
            mainProgram = "ringway";
            platforms = pkgs.lib.platforms.linux;
          };
        };
      });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [ cargo rustc clippy rustfmt protobuf etcd wrk nginx haproxy ];
        };
      });

      nixosModules.default = { config, lib, pkgs, ... }:
        let cfg = config.services.ringway;
        in {
          options.services.ringway = {
            enable = lib.mkEnableOption "the ringway service-mesh node";
            package = lib.mkOption {
              type = lib.types.package;
              default = self.packages.${pkgs.system}.default;
              description = "The ringway package.";
            };
            profile = lib.mkOption {
              type = lib.types.path;
              description = "Deploy profile (TOML), see deploy/profiles/ in the source.";
            };
            bindLowPorts = lib.mkOption {
              type = lib.types.bool;
              default = false;
              description = "Grant CAP_NET_BIND_SERVICE for listeners below port 1024.";
            };
          };
          config = lib.mkIf cfg.enable {
            systemd.services.ringway = {
              description = "ringway service-mesh node";
              wantedBy = [ "multi-user.target" ];
              after = [ "network-online.target" ];
              wants = [ "network-online.target" ];
              serviceConfig = {
                ExecStartPre = "${cfg.package}/bin/ringway check --profile ${cfg.profile}";
                ExecStart = "${cfg.package}/bin/ringway run --profile ${cfg.profile}";
                DynamicUser = true;
                StateDirectory = "ringway";
                Restart = "on-failure";
                RestartSec = "1s";
                TimeoutStopSec = 40;
                LimitNOFILE = 1048576;
                LimitMEMLOCK = "infinity";
                NoNewPrivileges = true;
                ProtectSystem = "strict";
                ProtectHome = true;
                PrivateTmp = true;
                PrivateDevices = true;
                ProtectKernelTunables = true;
                ProtectKernelModules = true;
                ProtectControlGroups = true;
                RestrictNamespaces = true;
                LockPersonality = true;
                MemoryDenyWriteExecute = true;
                RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
                AmbientCapabilities = lib.optional cfg.bindLowPorts "CAP_NET_BIND_SERVICE";
                CapabilityBoundingSet = lib.optional cfg.bindLowPorts "CAP_NET_BIND_SERVICE";
              };
            };
          };
        };
    };
}
