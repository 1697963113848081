# Homebrew formula for hotfolder: builds it from source with cargo, installs the completions and
# the man page the binary writes, and a LaunchAgent (`brew services start hotfolder`) with the
# label of packaging/launchd/com.movingimage.hotfolder.plist. For a tap: copy this file into
# Formula/ and set url and sha256 to the release's source tarball (`shasum -a 256`).
class Hotfolder < Formula
  desc "Watches folders and uploads finished video exports to movingimage VideoManager Pro"
  homepage "https://github.com/movingimage/hotfolder"
  url "https://github.com/movingimage/hotfolder/archive/refs/tags/v0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license any_of: ["MIT", "Apache-2.0"]
  head "https://github.com/movingimage/hotfolder.git", branch: "main"

  depends_on "rust" => :build
  depends_on :macos

  def install
    # A tarball has no git history: `--version` then shows the build date alone, from
    # SOURCE_DATE_EPOCH, which Homebrew sets for reproducible builds.
    system "cargo", "install", *std_cargo_args
    generate_completions_from_executable(bin/"hotfolder", "completions")
    (man1/"hotfolder.1").write Utils.safe_popen_read(bin/"hotfolder", "manpage")
  end

  # The LaunchAgent: `hotfolder run` with the config `hotfolder init` writes
  # (~/Library/Application Support/hotfolder/config.toml, its default). No log_path: the agent
  # logs to daily files that roll and are pruned (~/Library/Application Support/hotfolder/logs),
  # and a start-up failure (a broken config) is written there too when stderr goes nowhere.
  service do
    name macos: "com.movingimage.hotfolder"
    run [opt_bin/"hotfolder", "run"]
    keep_alive successful_exit: false
    process_type :background
  end

  def caveats
    <<~EOS
      Write a config, check it, then start the agent at every login:
        hotfolder init
        hotfolder check
        brew services start hotfolder
      Folders in Desktop, Documents, Downloads or on external volumes need Full Disk Access for
      #{opt_bin}/hotfolder (System Settings > Privacy & Security).
    EOS
  end

  test do
    assert_match "hotfolder #{version}", shell_output("#{bin}/hotfolder --version")
    (testpath/"config.toml").write <<~EOS
      [account]
      username = "test@example.com"
      password = "secret"
      video_manager_id = 1
    EOS
    assert_match "no [[folder]]", shell_output("#{bin}/hotfolder scan --config #{testpath}/config.toml")
  end
end
