# The Maze scene: draws the game and connects it to `agentkit train` through the bridge client.
#
# Settings (command line `--port=N` etc. after the engine's own options, else the AGENTKIT_BRIDGE_*
# environment variables that `agentkit train` sets for launched games, else the exported variables below
# for a game started in the editor): port, host, instance, token. Without a port the scene just shows a
# random maze.
extends Node2D

const Maze = preload("res://game/maze.gd")
const Bridge = preload("res://addons/agentkit/bridge.gd")
const CELL = 48

export var port = 0                 # the trainer's port (listen mode: env.port of the run config)
export var host = "127.0.0.1"
export var frame_budget_msec = 50   # time spent answering the trainer per frame

var maze = Maze.new()
var bridge = Bridge.new()
var episode_return = 0.0

func _ready():
	var s = _settings()
	maze.reset(int(s.get("seed", "0")))
	if int(s.port) == 0:
		print("maze: no port given (--port=N or AGENTKIT_BRIDGE_PORT): showing the game only")
		return
	var instance = null if s.instance == "" else int(s.instance)
	var token = null if s.token == "" else s.token
	if bridge.start(self, "godot-maze", s.host, int(s.port), instance, token) != OK:
		get_tree().quit(2)

func _process(_delta):
	if bridge.connected or bridge.closed:
		if not bridge.poll(frame_budget_msec):
			get_tree().quit()
		update()

# -- the bridge's three calls (addons/agentkit/bridge.gd) -------------------------------------------------

func bridge_agents() -> Array:
	return [{
		"name": "walker",
		"observation": {"shape": [Maze.OBS_SIZE], "low": -1.0, "high": 1.0},
		"action": {"kind": "discrete", "n": 4},
		"mask": true,
	}]

func bridge_reset(new_seed, params: Dictionary) -> Dictionary:
	if params.has("max_steps"):
		maze.max_steps = int(params["max_steps"])
	maze.reset(new_seed)
	episode_return = 0.0
	return {"obs": maze.observe(), "alive": PoolByteArray([1]), "mask": maze.mask()}

func bridge_step(action_int: PoolIntArray, _action_float: PoolRealArray) -> Dictionary:
	var r = maze.step(action_int[0])
	episode_return += r[0]
	var ended = r[1] or r[2]
	return {
		"obs": maze.observe(),
		"reward": PoolRealArray([r[0]]),
		"terminated": PoolByteArray([1 if r[1] else 0]),
		"truncated": PoolByteArray([1 if r[2] else 0]),
		"alive": PoolByteArray([0 if ended else 1]),
		"mask": maze.mask(),
		"info": PoolRealArray([1.0 if r[1] else 0.0, maze.illegal_moves]),
		"info_keys": ["success", "illegal_moves"],
	}

# -- drawing (a window in the editor; the headless server draws nothing) ----------------------------------

func _draw():
	for y in Maze.SIZE:
		for x in Maze.SIZE:
			var color = Color(0.92, 0.92, 0.92) if maze.is_free(Vector2(x, y)) else Color(0.25, 0.25, 0.3)
			draw_rect(Rect2(x * CELL, y * CELL, CELL - 2, CELL - 2), color)
	draw_circle(maze.goal * CELL + Vector2(CELL, CELL) / 2, CELL * 0.35, Color(0.2, 0.7, 0.3))
	draw_circle(maze.agent * CELL + Vector2(CELL, CELL) / 2, CELL * 0.3, Color(0.2, 0.4, 0.9))

func _settings() -> Dictionary:
	var s = {
		"port": OS.get_environment("AGENTKIT_BRIDGE_PORT"),
		"host": OS.get_environment("AGENTKIT_BRIDGE_HOST"),
		"instance": OS.get_environment("AGENTKIT_BRIDGE_INSTANCE"),
		"token": OS.get_environment("AGENTKIT_BRIDGE_TOKEN"),
		"seed": OS.get_environment("AGENTKIT_BRIDGE_SEED"),
	}
	for arg in OS.get_cmdline_args():
		if arg.begins_with("--") and "=" in arg:
			var kv = arg.substr(2).split("=", true, 1)
			s[kv[0]] = kv[1]
	if s.port == "":
		s.port = str(port)
	if s.host == "":
		s.host = host
	if s.seed == "":
		s.seed = "0"
	return s
