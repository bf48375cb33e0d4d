# Sourced by the benchmark scripts: `hermetic DIR` points HOME, the state dir and git's
# config into DIR (no benchmark reads or writes the user's machine index) and makes
# DIR/app, a repository with one empty commit on main.
hermetic() {
	export HOME="$1/home" XDG_STATE_HOME="$1/state" GIT_CONFIG_GLOBAL="$1/gitconfig" GIT_CONFIG_SYSTEM=/dev/null
	mkdir -p "$HOME"
	git config --global user.name bench
	git config --global user.email bench@example.com
	git init -q -b main "$1/app"
	git -C "$1/app" commit -q --allow-empty -m init
}
