-- wrk script of the ONNX rows: POST the Open Inference Protocol request body in the file
-- given after `--` (wrk -s post.lua URL -- BODY.json), the same body every time.
function init(args)
  local file = assert(io.open(args[1], "rb"))
  wrk.body = file:read("*a")
  file:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
