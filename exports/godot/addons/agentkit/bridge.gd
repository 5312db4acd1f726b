# agentkit bridge client for Godot 3.x (GDScript), protocol version 2 over TCP (docs/bridge.md; set
# `bridge.protocol = 1` before `start` to speak version 1, float32 observations only).
#
# Copy this folder (addons/agentkit/) into your project. The game gives the client an object (`game`)
# with three methods, and calls `poll()` from its own _process:
#
#   game.bridge_agents() -> Array     the agents as docs/bridge.md's `hello.agents` (a Dictionary each)
#   game.bridge_reset(new_seed, params) -> Dictionary   {obs: PoolRealArray, alive: PoolByteArray[, mask: PoolByteArray]}
#
# Observations of other dtypes (protocol 2: an agent's observation {"shape": [64, 64, 3], "dtype": "uint8"},
# or a Dict {"kind": "dict", "entries": [...]}) travel in their own blobs: the result's `obs_uint8`
# (PoolByteArray: camera pixels, e.g. Image.get_data() of an RGB8 image) and `obs_int32` (PoolIntArray) beside
# `obs` (the float32 values), every agent's values of that dtype in order. Give each key whose dtype some agent
# declares, and only those.
#   game.bridge_step(action_int: PoolIntArray, action_float: PoolRealArray) -> Dictionary
#       {obs, reward: PoolRealArray, terminated, truncated, alive: PoolByteArray[, mask][, info: PoolRealArray,
#        info_keys: Array]}
#
# `seed` is an int or null (keep the generator as it is); `params` the run config's env.params.
# The arrays are the blobs of reset_result / step_result, agents in `bridge_agents()` order.
#
#   var bridge = preload("res://addons/agentkit/bridge.gd").new()
#   bridge.start(self, "my-game", "127.0.0.1", port, instance)   # instance: int, or null for listen mode
#   func _process(_delta): bridge.poll(50)                         # handle messages for up to 50 ms
#
# poll() blocks while it waits for the trainer (a training game runs as fast as the trainer steps it);
# between frames Godot renders, so a game watched in the editor still draws.
extends Reference

const PROTOCOL = 2
const OBS_BLOBS = [["obs", "float32"], ["obs_uint8", "uint8"], ["obs_int32", "int32"]]
const DEFAULT_MAX_FRAME = 16 * 1024 * 1024
const DTYPE_SIZE = {"float32": 4, "int32": 4, "uint8": 1}

var tcp = StreamPeerTCP.new()
var protocol = PROTOCOL   # the version the hello says: 2, or 1
var game = null
var instance = null
var max_frame_bytes = DEFAULT_MAX_FRAME
var connected = false     # the trainer sent `welcome`
var closed = false        # the trainer sent `close` or the connection ended
var close_reason = ""
var steps = 0             # step messages answered
var episodes = 0          # reset messages answered

# -- the game's side --------------------------------------------------------------------------------------

# Connect to the trainer and say hello; returns OK or an error code (the reason is printed).
func start(game_object, game_name: String, host: String, port: int, instance_number = null, token = null) -> int:
	game = game_object
	instance = instance_number
	var err = tcp.connect_to_host(host, port)
	if err != OK:
		return _fail("cannot connect to %s:%d (error %d)" % [host, port, err])
	while tcp.get_status() == StreamPeerTCP.STATUS_CONNECTING:
		OS.delay_msec(1)
	if tcp.get_status() != StreamPeerTCP.STATUS_CONNECTED:
		return _fail("cannot connect to %s:%d: is `agentkit train` listening there?" % [host, port])
	tcp.set_no_delay(true)
	tcp.set_big_endian(false)
	var hello = {"type": "hello", "protocol": protocol, "game": game_name, "instance": instance,
		"token": token, "agents": game.bridge_agents(), "state_dim": 0}
	_send(hello, [])
	var msg = _receive()
	if msg == null:
		return FAILED
	if msg.header.get("type") != "welcome":
		return _fail("the trainer refused the game: %s" % to_json(msg.header))
	instance = int(msg.header.get("instance", -1))
	max_frame_bytes = int(msg.header.get("max_frame_bytes", DEFAULT_MAX_FRAME))
	connected = true
	return OK

# Answer the trainer's messages for up to `budget_msec` milliseconds (at least one message is waited for).
# Returns false once the connection is closed (the game should then quit, if it was launched).
func poll(budget_msec := 50) -> bool:
	if closed:
		return false
	var start_ms = OS.get_ticks_msec()
	while true:
		var msg = _receive()
		if msg == null:
			return false
		_handle(msg)
		if closed or OS.get_ticks_msec() - start_ms >= budget_msec:
			break
	return not closed

# -- messages -----------------------------------------------------------------------------------------------

func _handle(msg) -> void:
	var kind = msg.header.get("type")
	if kind == "reset":
		var new_seed = msg.header.get("seed")
		if new_seed != null:
			new_seed = int(new_seed)
		var params = msg.header.get("params", {})
		var r = game.bridge_reset(new_seed, params if params != null else {})
		episodes += 1
		var blobs = _obs_blobs(r)
		blobs.append(["alive", "uint8", r.alive])
		if r.has("mask"):
			blobs.append(["mask", "uint8", r.mask])
		_send({"type": "reset_result"}, blobs)
	elif kind == "step":
		var r = game.bridge_step(PoolIntArray(msg.blobs["action_int"]), PoolRealArray(msg.blobs["action_float"]))
		steps += 1
		var blobs = _obs_blobs(r)
		blobs += [["reward", "float32", r.reward], ["terminated", "uint8", r.terminated],
			["truncated", "uint8", r.truncated], ["alive", "uint8", r.alive]]
		if r.has("mask"):
			blobs.append(["mask", "uint8", r.mask])
		var header = {"type": "step_result"}
		if r.has("info"):
			blobs.append(["info", "float32", r.info])
			header["info_keys"] = r.info_keys
		_send(header, blobs)
	elif kind == "close":
		close_reason = str(msg.header.get("reason", ""))
		_close()
	elif kind == "error":
		printerr("agentkit bridge: the trainer reported %s: %s" % [msg.header.get("code"), msg.header.get("message")])
		_close()
	else:
		_send_error("unexpected_message", "the game did not expect a %s message here" % str(kind), "type")
		_close()

# The observation blobs of a reset or step result: each of obs / obs_uint8 / obs_int32 the game gave.
func _obs_blobs(r: Dictionary) -> Array:
	var blobs = []
	for b in OBS_BLOBS:
		if r.has(b[0]):
			blobs.append([b[0], b[1], r[b[0]]])
	return blobs

# -- framing ------------------------------------------------------------------------------------------------

# blobs: Array of [name, dtype, array]. One TCP frame: u32 length | u32 header length | header | blobs.
func _send(header: Dictionary, blobs: Array) -> void:
	var listed = []
	for b in blobs:
		listed.append({"name": b[0], "dtype": b[1], "count": b[2].size()})
	header["blobs"] = listed
	var text = to_json(header).to_utf8()
	var body = StreamPeerBuffer.new()
	body.big_endian = false
	body.put_u32(0)                     # the frame length, filled in below
	body.put_u32(text.size())
	body.put_data(text)
	for b in blobs:
		var values = b[2]
		if b[1] == "float32":
			for v in values:
				body.put_float(v)
		elif b[1] == "int32":
			for v in values:
				body.put_32(v)
		elif typeof(values) == TYPE_RAW_ARRAY:   # a PoolByteArray (pixels): all its bytes at once
			body.put_data(values)
		else:
			for v in values:
				body.put_u8(v)
	var size = body.get_size()
	body.seek(0)
	body.put_u32(size - 4)
	tcp.put_data(body.data_array)

# The next message as {header: Dictionary, blobs: {name: Array}}, or null when the connection ended.
func _receive():
	if tcp.get_status() != StreamPeerTCP.STATUS_CONNECTED:
		_close()
		return null
	var got = tcp.get_data(4)
	if got[0] != OK or got[1].size() != 4:
		_close()
		return null
	var frame = StreamPeerBuffer.new()
	frame.big_endian = false
	frame.data_array = got[1]
	var length = frame.get_u32()
	if length > max_frame_bytes:
		_send_error("frame_too_large", "a frame of %d bytes is above the game's limit of %d" % [length, max_frame_bytes], "length")
		_close()
		return null
	got = tcp.get_data(length)
	if got[0] != OK:
		_close()
		return null
	var payload = StreamPeerBuffer.new()
	payload.big_endian = false
	payload.data_array = got[1]
	var header_len = payload.get_u32()
	var parsed = JSON.parse(payload.get_data(header_len)[1].get_string_from_utf8())
	if parsed.error != OK or typeof(parsed.result) != TYPE_DICTIONARY:
		_send_error("bad_frame", "the header is not a JSON object", "header")
		_close()
		return null
	var header = parsed.result
	var blobs = {}
	for b in header.get("blobs", []):
		var count = int(b["count"])
		var values = []
		values.resize(count)
		if b["dtype"] == "float32":
			for i in count:
				values[i] = payload.get_float()
		elif b["dtype"] == "int32":
			for i in count:
				values[i] = payload.get_32()
		elif b["dtype"] == "uint8":
			for i in count:
				values[i] = payload.get_u8()
		else:
			_send_error("bad_frame", "unknown dtype %s" % str(b["dtype"]), "blobs")
			_close()
			return null
		blobs[b["name"]] = values
	if payload.get_position() != payload.get_size():
		_send_error("bad_frame", "the blobs do not add up to the frame's length", "blobs")
		_close()
		return null
	return {"header": header, "blobs": blobs}

func _send_error(code: String, message: String, field: String) -> void:
	if tcp.get_status() == StreamPeerTCP.STATUS_CONNECTED:
		_send({"type": "error", "code": code, "message": message, "field": field}, [])

func _fail(message: String) -> int:
	printerr("agentkit bridge: " + message)
	_close()
	return FAILED

func _close() -> void:
	closed = true
	connected = false
	tcp.disconnect_from_host()
