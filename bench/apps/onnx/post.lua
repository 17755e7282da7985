-- wrk script of the ONNX rows: POST the Open Inference Protocol request body in the file
-- given after `--`, the same body every time:
--   wrk -s post.lua URL -- BODY.json               (JSON)
--   wrk -s post.lua URL -- BODY.bin HEADER_LENGTH  (Triton's binary tensor extension)
function init(args)
  local file = assert(io.open(args[1], "rb"))
  wrk.body = file:read("*a")
  file:close()
  wrk.method = "POST"
  if args[2] then
    wrk.headers["Content-Type"] = "application/octet-stream"
    wrk.headers["Inference-Header-Content-Length"] = args[2]
  else
    wrk.headers["Content-Type"] = "application/json"
  end
end
