// agentkit bridge client for C# (.NET Standard 2.0: plain System.Net.Sockets and arrays, no engine
// dependency), protocol version 2 over TCP (docs/bridge.md; ProtocolVersion = 1 speaks version 1, float32
// observations only). Drop this one file into a Unity project or any .NET program.
//
//     var agents = new[] { AgentSpec.Box("ship", obsSize: 7, actionSize: 2, low: -1f, high: 1f) };
//     using (var client = new BridgeClient("my-game", agents, game))   // game: an IBridgeGame
//     {
//         client.Connect(BridgeSettings.FromEnvironment(args));       // --port=N or AGENTKIT_BRIDGE_PORT
//         client.Run();                                                // until the trainer sends `close`
//     }
//
// The game fills preallocated arrays (StepBuffers); agents are in the order given to the client, each
// observation row-major. An observation is float32 values by default; ObsSpec.Box(shape, "uint8") declares a
// camera frame ([H, W, 3] bytes, filled into ObsUint8) and "int32" integers (ObsInt32), ObsSpec.Dict named
// Boxes; every agent factory takes an ObsSpec in place of obsSize. Each dtype travels as raw bytes of its type. Unity: call client.Poll() from Update() (it blocks until the trainer's next
// message) or run client.Run() on a worker thread that hands actions to the main thread.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Net.Sockets;
using System.Text;

namespace AgentKit.Bridge
{
    /// <summary>The game's side: reset and step fill <see cref="StepBuffers"/>.</summary>
    public interface IBridgeGame
    {
        /// <summary>Start an episode. seed: seed the game's generator, or null to keep it as it is.
        /// Fill Obs, Alive (and Mask when an agent declared one).</summary>
        void Reset(int? seed, IDictionary<string, object> parameters, StepBuffers result);

        /// <summary>Apply every agent's action and advance one step. actionInt/actionFloat: the agents'
        /// integer and float parts, in agent order (docs/bridge.md, "step"). Fill Obs, Reward, Terminated,
        /// Truncated, Alive (and Mask, Info).</summary>
        void Step(int[] actionInt, float[] actionFloat, StepBuffers result);
    }

    /// <summary>An observation (protocol 2): a Box of any shape whose values are float32, uint8 (pixels) or
    /// int32, or a Dict of named Boxes (sent in the order given).</summary>
    public sealed class ObsSpec
    {
        public readonly string Name;  // a Dict entry's name; null for a Box that is the whole observation
        public readonly string Dtype;
        public readonly int Size;
        public readonly ObsSpec[] Entries;  // a Dict's Boxes; null for a Box
        internal readonly Dictionary<string, object> Json;

        ObsSpec(string name, string dtype, int size, ObsSpec[] entries, Dictionary<string, object> json)
        {
            Name = name; Dtype = dtype; Size = size; Entries = entries; Json = json;
        }

        /// <summary>A Box of the given shape (row-major) and dtype "float32", "uint8" or "int32"; bounds optional.</summary>
        public static ObsSpec Box(int[] shape, string dtype = "float32", float? low = null, float? high = null)
        {
            if (dtype != "float32" && dtype != "uint8" && dtype != "int32")
                throw new ArgumentException("observation dtype " + dtype + ": give float32, uint8 or int32");
            int size = 1;
            var dims = new object[shape.Length];
            for (int i = 0; i < shape.Length; i++) { size *= shape[i]; dims[i] = shape[i]; }
            var json = new Dictionary<string, object> { { "shape", dims }, { "dtype", dtype } };
            if (low.HasValue) json["low"] = low.Value;
            if (high.HasValue) json["high"] = high.Value;
            return new ObsSpec(null, dtype, size, null, json);
        }

        /// <summary>A Dict of the Boxes <paramref name="boxes"/> named <paramref name="names"/>.</summary>
        public static ObsSpec Dict(string[] names, ObsSpec[] boxes)
        {
            var entries = new ObsSpec[names.Length];
            var listed = new List<object>();
            for (int i = 0; i < names.Length; i++)
            {
                if (boxes[i].Entries != null) throw new ArgumentException("a Dict entry must be a Box: " + names[i]);
                var json = new Dictionary<string, object>(boxes[i].Json) { { "name", names[i] } };
                entries[i] = new ObsSpec(names[i], boxes[i].Dtype, boxes[i].Size, null, json);
                listed.Add(json);
            }
            return new ObsSpec(null, null, 0, entries,
                               new Dictionary<string, object> { { "kind", "dict" }, { "entries", listed } });
        }

        /// <summary>The Boxes that travel: the Dict's entries, or this Box.</summary>
        public ObsSpec[] Boxes { get { return Entries ?? new[] { this }; } }

        internal static ObsSpec Vector(int size, float? low, float? high)
        {
            return Box(new[] { size }, "float32", low, high);
        }
    }

    /// <summary>One agent's declaration in <c>hello</c> (the vocabulary of the ONNX metadata).</summary>
    public sealed class AgentSpec
    {
        public readonly string Name;
        public readonly int ObsSize, MaskSize, IntCount, FloatCount;  // ObsSize: the float32 values
        public readonly ObsSpec Observation;
        internal readonly Dictionary<string, object> Json;

        AgentSpec(string name, ObsSpec obs, Dictionary<string, object> action, int maskSize, int ints, int floats)
        {
            Name = name; Observation = obs; MaskSize = maskSize; IntCount = ints; FloatCount = floats;
            foreach (var b in obs.Boxes) if (b.Dtype == "float32") ObsSize += b.Size;
            Json = new Dictionary<string, object> {
                { "name", name }, { "observation", obs.Json }, { "action", action }, { "mask", maskSize > 0 } };
        }

        /// <summary>Discrete(n); mask: the game sends which of the n actions are allowed at every step.</summary>
        public static AgentSpec Discrete(string name, int obsSize, int n, bool mask = false,
                                         float? obsLow = null, float? obsHigh = null)
        {
            return Discrete(name, ObsSpec.Vector(obsSize, obsLow, obsHigh), n, mask);
        }

        public static AgentSpec Discrete(string name, ObsSpec obs, int n, bool mask = false)
        {
            var action = new Dictionary<string, object> { { "kind", "discrete" }, { "n", n } };
            return new AgentSpec(name, obs, action, mask ? n : 0, 1, 0);
        }

        /// <summary>A Box of actionSize floats in [low, high] (env units).</summary>
        public static AgentSpec Box(string name, int obsSize, int actionSize, float low, float high,
                                    float? obsLow = null, float? obsHigh = null)
        {
            return Box(name, ObsSpec.Vector(obsSize, obsLow, obsHigh), actionSize, low, high);
        }

        public static AgentSpec Box(string name, ObsSpec obs, int actionSize, float low, float high)
        {
            var action = new Dictionary<string, object> {
                { "kind", "box" }, { "shape", new object[] { actionSize } }, { "low", low }, { "high", high } };
            return new AgentSpec(name, obs, action, 0, 0, actionSize);
        }

        /// <summary>Hybrid: a type (types[k] with the parameters it owns) and one float per parameter.
        /// paramLow/paramHigh are per parameter, in params order; mask: a type mask at every step.</summary>
        public static AgentSpec Hybrid(string name, int obsSize, string[] typeNames, string[][] typeParams,
                                       string[] paramNames, float[] paramLow, float[] paramHigh, bool mask = false,
                                       float? obsLow = null, float? obsHigh = null)
        {
            return Hybrid(name, ObsSpec.Vector(obsSize, obsLow, obsHigh), typeNames, typeParams, paramNames, paramLow,
                          paramHigh, mask);
        }

        public static AgentSpec Hybrid(string name, ObsSpec obs, string[] typeNames, string[][] typeParams,
                                       string[] paramNames, float[] paramLow, float[] paramHigh, bool mask = false)
        {
            var types = new List<object>();
            for (int k = 0; k < typeNames.Length; k++)
                types.Add(new Dictionary<string, object> { { "name", typeNames[k] }, { "params", typeParams[k] } });
            var ps = new List<object>();
            for (int i = 0; i < paramNames.Length; i++)
                ps.Add(new Dictionary<string, object> {
                    { "name", paramNames[i] }, { "low", paramLow[i] }, { "high", paramHigh[i] } });
            var action = new Dictionary<string, object> { { "kind", "hybrid" }, { "types", types }, { "params", ps } };
            return new AgentSpec(name, obs, action, mask ? typeNames.Length : 0, 1, paramNames.Length);
        }
    }

    /// <summary>The arrays a reset or step fills, sized once from the agents' specs.</summary>
    public sealed class StepBuffers
    {
        /// <summary>The observations by dtype: float32 values in Obs, uint8 in ObsUint8, int32 in ObsInt32
        /// (agents in order, a Dict's entries in declared order; Offset says where each starts).</summary>
        public readonly float[] Obs, Reward;
        public readonly byte[] ObsUint8;
        public readonly int[] ObsInt32;
        public readonly byte[] Alive, Terminated, Truncated, Mask;
        /// <summary>Where each agent's float32 observation values / mask start in Obs / Mask.</summary>
        public readonly int[] ObsOffset, MaskOffset;
        readonly Dictionary<string, int> entryOffset = new Dictionary<string, int>();
        /// <summary>Optional numeric facts per agent (agent-major, InfoKeys.Length columns; NaN = none).</summary>
        public string[] InfoKeys = new string[0];
        public float[] Info = new float[0];

        public StepBuffers(IList<AgentSpec> agents)
        {
            int obs = 0, u8 = 0, i32 = 0, mask = 0;
            ObsOffset = new int[agents.Count]; MaskOffset = new int[agents.Count];
            for (int i = 0; i < agents.Count; i++)
            {
                ObsOffset[i] = obs;
                foreach (var b in agents[i].Observation.Boxes)
                {
                    string key = i + "/" + b.Name;
                    if (b.Dtype == "uint8") { entryOffset[key] = u8; u8 += b.Size; }
                    else if (b.Dtype == "int32") { entryOffset[key] = i32; i32 += b.Size; }
                    else { entryOffset[key] = obs; obs += b.Size; }
                }
                MaskOffset[i] = mask; mask += agents[i].MaskSize;
            }
            Obs = new float[obs]; ObsUint8 = new byte[u8]; ObsInt32 = new int[i32]; Mask = new byte[mask];
            Reward = new float[agents.Count];
            Alive = new byte[agents.Count]; Terminated = new byte[agents.Count]; Truncated = new byte[agents.Count];
        }

        /// <summary>Where agent <paramref name="agent"/>'s observation Box (a Dict's entry <paramref name="entry"/>)
        /// starts in the array of its dtype (Obs, ObsUint8 or ObsInt32).</summary>
        public int Offset(int agent, string entry = null)
        {
            int at;
            if (!entryOffset.TryGetValue(agent + "/" + entry, out at))
                throw new ArgumentException("agent " + agent + " has no observation entry " + (entry ?? "(the Box)"));
            return at;
        }

        /// <summary>Declare info columns (e.g. "success"); Info is then agents x keys, NaN-filled.</summary>
        public void SetInfoKeys(params string[] keys)
        {
            InfoKeys = keys;
            Info = new float[Reward.Length * keys.Length];
            for (int i = 0; i < Info.Length; i++) Info[i] = float.NaN;
        }
    }

    /// <summary>Where the trainer is: from "--port=N" style arguments, else the AGENTKIT_BRIDGE_*
    /// variables `agentkit train` sets for launched games.</summary>
    public sealed class BridgeSettings
    {
        public string Host = "127.0.0.1";
        public int Port;
        public int? Instance;
        public string Token;
        public readonly Dictionary<string, string> Extra = new Dictionary<string, string>();

        public static BridgeSettings FromEnvironment(string[] args)
        {
            var values = new Dictionary<string, string>();
            foreach (var key in new[] { "HOST", "PORT", "INSTANCE", "TOKEN", "SEED" })
            {
                var v = Environment.GetEnvironmentVariable("AGENTKIT_BRIDGE_" + key);
                if (!string.IsNullOrEmpty(v)) values[key.ToLowerInvariant()] = v;
            }
            foreach (var arg in args)
            {
                if (!arg.StartsWith("--") || arg.IndexOf('=') < 0) continue;
                int eq = arg.IndexOf('=');
                values[arg.Substring(2, eq - 2)] = arg.Substring(eq + 1);
            }
            var s = new BridgeSettings();
            foreach (var kv in values)
            {
                switch (kv.Key)
                {
                    case "host": s.Host = kv.Value; break;
                    case "port": s.Port = int.Parse(kv.Value, CultureInfo.InvariantCulture); break;
                    case "instance": s.Instance = int.Parse(kv.Value, CultureInfo.InvariantCulture); break;
                    case "token": s.Token = kv.Value; break;
                    default: s.Extra[kv.Key] = kv.Value; break;
                }
            }
            return s;
        }
    }

    /// <summary>A refusal or protocol failure; Code is a docs/bridge.md error code.</summary>
    public sealed class BridgeException : Exception
    {
        public readonly string Code;
        public BridgeException(string code, string message) : base(message) { Code = code; }
    }

    /// <summary>The client: connects, says hello, then answers reset/step until close.</summary>
    public sealed class BridgeClient : IDisposable
    {
        public const int Protocol = 2;
        /// <summary>The version this client says it speaks: 2, or 1 for float32 Boxes only.</summary>
        public int ProtocolVersion = Protocol;
        readonly string game;
        readonly AgentSpec[] agents;
        readonly IBridgeGame handler;
        readonly StepBuffers buffers;
        readonly int[] actionInt;
        readonly float[] actionFloat;
        TcpClient tcp;
        Stream stream;
        BinaryReader reader;
        int maxFrameBytes = 16 * 1024 * 1024;
        byte[] payload = new byte[1024];
        readonly MemoryStream output = new MemoryStream();

        public int Instance { get; private set; }
        public long Steps { get; private set; }
        public long Episodes { get; private set; }
        public bool Closed { get; private set; }
        public string CloseReason { get; private set; }

        public BridgeClient(string gameName, IList<AgentSpec> agentSpecs, IBridgeGame game)
        {
            this.game = gameName;
            agents = new AgentSpec[agentSpecs.Count];
            agentSpecs.CopyTo(agents, 0);
            handler = game;
            buffers = new StepBuffers(agents);
            int ints = 0, floats = 0;
            foreach (var a in agents) { ints += a.IntCount; floats += a.FloatCount; }
            actionInt = new int[ints];
            actionFloat = new float[floats];
        }

        public void Connect(BridgeSettings settings)
        {
            if (settings.Port <= 0)
                throw new BridgeException("bad_settings", "no trainer port: pass --port=N or set AGENTKIT_BRIDGE_PORT");
            tcp = new TcpClient(settings.Host, settings.Port) { NoDelay = true };
            stream = tcp.GetStream();
            reader = new BinaryReader(stream);
            var specs = new List<object>();
            foreach (var a in agents)
            {
                if (ProtocolVersion < 2 && (a.Observation.Entries != null || a.Observation.Dtype != "float32"))
                    throw new BridgeException("bad_settings", "agent " + a.Name + ": protocol 1 carries one float32 Box per agent");
                specs.Add(a.Json);
            }
            var hello = new Dictionary<string, object> {
                { "type", "hello" }, { "protocol", ProtocolVersion }, { "game", game },
                { "instance", settings.Instance.HasValue ? (object)settings.Instance.Value : null },
                { "token", settings.Token }, { "agents", specs }, { "state_dim", 0 } };
            Send(hello);
            var welcome = Receive();
            var type = welcome.Header.ContainsKey("type") ? welcome.Header["type"] as string : null;
            if (type != "welcome")
                throw new BridgeException(welcome.Get("code", "unexpected_message"),
                    "the trainer refused the game: " + welcome.Get("message", Json.Write(welcome.Header)));
            Instance = Convert.ToInt32(welcome.Header["instance"], CultureInfo.InvariantCulture);
            if (welcome.Header.ContainsKey("max_frame_bytes"))
                maxFrameBytes = Convert.ToInt32(welcome.Header["max_frame_bytes"], CultureInfo.InvariantCulture);
        }

        /// <summary>Answer messages until the trainer closes the connection.</summary>
        public void Run()
        {
            while (Poll()) { }
        }

        /// <summary>Wait for and answer one message; false once the connection is closed.</summary>
        public bool Poll()
        {
            if (Closed) return false;
            Message msg;
            try { msg = Receive(); }
            catch (EndOfStreamException) { Closed = true; CloseReason = "connection closed"; return false; }
            catch (IOException) { Closed = true; CloseReason = "connection closed"; return false; }
            switch (msg.Get("type", ""))
            {
                case "reset":
                    object seed;
                    msg.Header.TryGetValue("seed", out seed);
                    object p;
                    msg.Header.TryGetValue("params", out p);
                    Clear();
                    handler.Reset(seed == null ? (int?)null : Convert.ToInt32(seed, CultureInfo.InvariantCulture),
                                  p as IDictionary<string, object> ?? new Dictionary<string, object>(), buffers);
                    Episodes++;
                    SendResult("reset_result", false);
                    return true;
                case "step":
                    msg.Read("action_int", actionInt);
                    msg.Read("action_float", actionFloat);
                    Clear();
                    handler.Step(actionInt, actionFloat, buffers);
                    Steps++;
                    SendResult("step_result", true);
                    return true;
                case "close":
                    CloseReason = msg.Get("reason", "");
                    Dispose();
                    return false;
                case "error":
                    Dispose();
                    throw new BridgeException(msg.Get("code", "error"), "the trainer reported: " + msg.Get("message", ""));
                default:
                    SendError("unexpected_message", "the game did not expect a " + msg.Get("type", "?") + " message");
                    Dispose();
                    return false;
            }
        }

        public void Dispose()
        {
            Closed = true;
            if (tcp != null) tcp.Close();
            tcp = null;
        }

        void Clear()
        {
            Array.Clear(buffers.Reward, 0, buffers.Reward.Length);
            Array.Clear(buffers.Terminated, 0, buffers.Terminated.Length);
            Array.Clear(buffers.Truncated, 0, buffers.Truncated.Length);
        }

        // -- framing ------------------------------------------------------------------------------------------

        sealed class Message
        {
            public Dictionary<string, object> Header;
            public byte[] Payload;
            public Dictionary<string, int[]> Blobs = new Dictionary<string, int[]>();  // name -> {offset, count}

            public string Get(string key, string fallback)
            {
                object v;
                return Header.TryGetValue(key, out v) && v != null ? Convert.ToString(v, CultureInfo.InvariantCulture) : fallback;
            }

            public void Read(string name, Array into)
            {
                int[] at;
                if (!Blobs.TryGetValue(name, out at))
                    throw new BridgeException("bad_frame", "the step has no " + name + " blob");
                int size = into is int[] || into is float[] ? 4 : 1;
                if (at[1] != into.Length)
                    throw new BridgeException("bad_frame", name + " has " + at[1] + " values, the agents take " + into.Length);
                Buffer.BlockCopy(Payload, at[0], into, 0, at[1] * size);   // little-endian hosts (all of .NET's)
            }
        }

        Message Receive()
        {
            int length = reader.ReadInt32();
            if (length < 4) throw new BridgeException("bad_frame", "the trainer sent a frame of " + length + " bytes");
            if (length > maxFrameBytes)
            {
                SendError("frame_too_large", "a frame of " + length + " bytes is above the game's limit of " + maxFrameBytes);
                throw new BridgeException("frame_too_large", "the trainer sent a frame of " + length + " bytes");
            }
            if (payload.Length < length) payload = new byte[length];
            int got = 0;
            while (got < length)
            {
                int n = stream.Read(payload, got, length - got);
                if (n <= 0) throw new EndOfStreamException();
                got += n;
            }
            int headerLength = BitConverter.ToInt32(payload, 0);
            var header = Json.Parse(Encoding.UTF8.GetString(payload, 4, headerLength)) as Dictionary<string, object>;
            if (header == null) throw new BridgeException("bad_frame", "the header is not a JSON object");
            var msg = new Message { Header = header, Payload = payload };
            int offset = 4 + headerLength;
            object listed;
            if (header.TryGetValue("blobs", out listed) && listed is List<object>)
            {
                foreach (Dictionary<string, object> b in (List<object>)listed)
                {
                    int count = Convert.ToInt32(b["count"], CultureInfo.InvariantCulture);
                    string dtype = (string)b["dtype"];
                    int size = dtype == "uint8" ? 1 : 4;
                    msg.Blobs[(string)b["name"]] = new[] { offset, count };
                    offset += count * size;
                }
            }
            if (offset != length) throw new BridgeException("bad_frame", "the blobs do not add up to the frame's length");
            return msg;
        }

        void SendResult(string type, bool step)
        {
            var blobs = new List<KeyValuePair<string, Array>>();
            if (buffers.Obs.Length > 0 || ProtocolVersion < 2) blobs.Add(new KeyValuePair<string, Array>("obs", buffers.Obs));
            if (buffers.ObsUint8.Length > 0) blobs.Add(new KeyValuePair<string, Array>("obs_uint8", buffers.ObsUint8));
            if (buffers.ObsInt32.Length > 0) blobs.Add(new KeyValuePair<string, Array>("obs_int32", buffers.ObsInt32));
            if (step)
            {
                blobs.Add(new KeyValuePair<string, Array>("reward", buffers.Reward));
                blobs.Add(new KeyValuePair<string, Array>("terminated", buffers.Terminated));
                blobs.Add(new KeyValuePair<string, Array>("truncated", buffers.Truncated));
            }
            blobs.Add(new KeyValuePair<string, Array>("alive", buffers.Alive));
            if (buffers.Mask.Length > 0) blobs.Add(new KeyValuePair<string, Array>("mask", buffers.Mask));
            var header = new Dictionary<string, object> { { "type", type } };
            if (step && buffers.InfoKeys.Length > 0)
            {
                header["info_keys"] = buffers.InfoKeys;
                blobs.Add(new KeyValuePair<string, Array>("info", buffers.Info));
            }
            Send(header, blobs);
        }

        void SendError(string code, string message)
        {
            try { Send(new Dictionary<string, object> { { "type", "error" }, { "code", code }, { "message", message } }); }
            catch (Exception) { }
        }

        void Send(Dictionary<string, object> header, IList<KeyValuePair<string, Array>> blobs = null)
        {
            var listed = new List<object>();
            int blobBytes = 0;
            if (blobs != null)
                foreach (var b in blobs)
                {
                    string dtype = b.Value is float[] ? "float32" : b.Value is int[] ? "int32" : "uint8";
                    listed.Add(new Dictionary<string, object> { { "name", b.Key }, { "dtype", dtype }, { "count", b.Value.Length } });
                    blobBytes += Buffer.ByteLength(b.Value);
                }
            header["blobs"] = listed;
            byte[] text = Encoding.UTF8.GetBytes(Json.Write(header));
            output.SetLength(0);
            var w = new BinaryWriter(output);
            w.Write(4 + text.Length + blobBytes);
            w.Write(text.Length);
            w.Write(text);
            if (blobs != null)
                foreach (var b in blobs)
                {
                    var bytes = new byte[Buffer.ByteLength(b.Value)];
                    Buffer.BlockCopy(b.Value, 0, bytes, 0, bytes.Length);
                    w.Write(bytes);
                }
            w.Flush();
            stream.Write(output.GetBuffer(), 0, (int)output.Length);
        }
    }

    /// <summary>The little JSON the headers need (.NET Standard 2.0 has no JSON library; Unity's
    /// JsonUtility cannot read free-form objects). Numbers parse as double.</summary>
    public static class Json
    {
        public static string Write(object value)
        {
            var sb = new StringBuilder();
            WriteValue(sb, value);
            return sb.ToString();
        }

        static void WriteValue(StringBuilder sb, object v)
        {
            if (v == null) sb.Append("null");
            else if (v is string) WriteString(sb, (string)v);
            else if (v is bool) sb.Append((bool)v ? "true" : "false");
            else if (v is float) sb.Append(((float)v).ToString("R", CultureInfo.InvariantCulture));
            else if (v is double) sb.Append(((double)v).ToString("R", CultureInfo.InvariantCulture));
            else if (v is int || v is long) sb.Append(Convert.ToString(v, CultureInfo.InvariantCulture));
            else if (v is IDictionary<string, object>)
            {
                sb.Append('{');
                bool first = true;
                foreach (var kv in (IDictionary<string, object>)v)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    WriteString(sb, kv.Key);
                    sb.Append(':');
                    WriteValue(sb, kv.Value);
                }
                sb.Append('}');
            }
            else if (v is System.Collections.IEnumerable)
            {
                sb.Append('[');
                bool first = true;
                foreach (var item in (System.Collections.IEnumerable)v)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    WriteValue(sb, item);
                }
                sb.Append(']');
            }
            else throw new ArgumentException("cannot write " + v.GetType() + " as JSON");
        }

        static void WriteString(StringBuilder sb, string s)
        {
            sb.Append('"');
            foreach (char c in s)
            {
                if (c == '"' || c == '\\') sb.Append('\\').Append(c);
                else if (c < ' ') sb.Append("\\u").Append(((int)c).ToString("x4"));
                else sb.Append(c);
            }
            sb.Append('"');
        }

        public static object Parse(string text)
        {
            int i = 0;
            var v = ParseValue(text, ref i);
            Skip(text, ref i);
            if (i != text.Length) throw new BridgeException("bad_frame", "trailing characters in a JSON header");
            return v;
        }

        static void Skip(string s, ref int i)
        {
            while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
        }

        static object ParseValue(string s, ref int i)
        {
            Skip(s, ref i);
            if (i >= s.Length) throw new BridgeException("bad_frame", "a JSON header ends early");
            char c = s[i];
            if (c == '{')
            {
                var d = new Dictionary<string, object>();
                i++;
                Skip(s, ref i);
                if (s[i] == '}') { i++; return d; }
                while (true)
                {
                    Skip(s, ref i);
                    string key = ParseString(s, ref i);
                    Skip(s, ref i);
                    i++;  // ':'
                    d[key] = ParseValue(s, ref i);
                    Skip(s, ref i);
                    if (s[i++] == '}') return d;
                }
            }
            if (c == '[')
            {
                var l = new List<object>();
                i++;
                Skip(s, ref i);
                if (s[i] == ']') { i++; return l; }
                while (true)
                {
                    l.Add(ParseValue(s, ref i));
                    Skip(s, ref i);
                    if (s[i++] == ']') return l;
                }
            }
            if (c == '"') return ParseString(s, ref i);
            if (s.Substring(i).StartsWith("true")) { i += 4; return true; }
            if (s.Substring(i).StartsWith("false")) { i += 5; return false; }
            if (s.Substring(i).StartsWith("null")) { i += 4; return null; }
            int start = i;
            while (i < s.Length && "+-0123456789.eE".IndexOf(s[i]) >= 0) i++;
            return double.Parse(s.Substring(start, i - start), CultureInfo.InvariantCulture);
        }

        static string ParseString(string s, ref int i)
        {
            var sb = new StringBuilder();
            i++;  // opening quote
            while (s[i] != '"')
            {
                char c = s[i++];
                if (c != '\\') { sb.Append(c); continue; }
                char e = s[i++];
                switch (e)
                {
                    case 'n': sb.Append('\n'); break;
                    case 't': sb.Append('\t'); break;
                    case 'r': sb.Append('\r'); break;
                    case 'b': sb.Append('\b'); break;
                    case 'f': sb.Append('\f'); break;
                    case 'u': sb.Append((char)Convert.ToInt32(s.Substring(i, 4), 16)); i += 4; break;
                    default: sb.Append(e); break;
                }
            }
            i++;
            return sb.ToString();
        }
    }
}
