# The Maze scene: draws the game and connects it to `agentkit train` through the bridge client.
#
# Settings (command line `--port=N` etc. after the engine's own options, else the AGENTKIT_BRIDGE_*
# environment variables that `agentkit train` sets for launched games: Bridge.launch_settings(); else the
# exported variables below for a game started in the editor): port, host, instance, instances, token, seed,
# connect-timeout (seconds to keep trying while the trainer does not listen yet; 30).
# `--instances=N` (what `env.instances_per_process: N` launches) runs N mazes side by side, one training area
# (game/area.gd) each, all served on one connection. Without a port the scene just shows random mazes.
extends Node2D

const Area = preload("res://game/area.gd")
const Maze = preload("res://game/maze.gd")
const Bridge = preload("res://addons/agentkit/bridge.gd")
const CELL = 48
const GAP = 24                      # between two areas

export var port = 0                 # the trainer's port (listen mode: env.port of the run config)
export var host = "127.0.0.1"
export var frame_budget_msec = 50   # time spent answering the trainer per frame

var areas = []                      # areas[k] is instance `instance + k`
var columns = 1                     # areas are drawn in a square grid, scaled to the window
var bridge = Bridge.new()

func _ready():
	var s = Bridge.launch_settings()
	var count = Bridge.instance_count(s)
	bridge.connect_timeout = Bridge.connect_timeout_of(s)
	if count == 0 or bridge.connect_timeout == 0.0:
		set_process(false)
		get_tree().quit(2)
		return
	var first_seed = int(s.seed) if s.seed != "" else 0
	for k in count:
		areas.append(Area.new(first_seed + k))
	columns = int(ceil(sqrt(count)))
	var span = Maze.SIZE * CELL + GAP
	scale = Vector2.ONE * (Maze.SIZE * CELL) / (columns * span - GAP)
	var the_port = int(s.port) if s.port != "" else port
	if the_port == 0:
		print("maze: no port given (--port=N or AGENTKIT_BRIDGE_PORT): showing the game only")
		return
	var instance = null if s.instance == "" else int(s.instance)
	var token = null if s.token == "" else s.token
	if bridge.start_many(areas, "godot-maze", s.host if s.host != "" else host, the_port, instance, token) != OK:
		set_process(false)
		get_tree().quit(2)

func _process(_delta):
	if bridge.connecting or bridge.connected or bridge.closed:
		if not bridge.poll(frame_budget_msec):
			get_tree().quit(2 if bridge.error != "" else 0)
		update()

# -- drawing (a window in the editor; the headless server draws nothing) ----------------------------------

func _draw():
	var span = Maze.SIZE * CELL + GAP
	for k in areas.size():
		var maze = areas[k].maze
		var origin = Vector2(k % columns, floor(float(k) / columns)) * span
		for y in Maze.SIZE:
			for x in Maze.SIZE:
				var color = Color(0.92, 0.92, 0.92) if maze.is_free(Vector2(x, y)) else Color(0.25, 0.25, 0.3)
				draw_rect(Rect2(origin + Vector2(x, y) * CELL, Vector2(CELL - 2, CELL - 2)), color)
		draw_circle(origin + maze.goal * CELL + Vector2(CELL, CELL) / 2, CELL * 0.35, Color(0.2, 0.7, 0.3))
		draw_circle(origin + maze.agent * CELL + Vector2(CELL, CELL) / 2, CELL * 0.3, Color(0.2, 0.4, 0.9))
