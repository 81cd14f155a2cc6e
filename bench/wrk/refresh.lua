-- Refresh rotation: each connection holds one refresh token; every answer's new token is the
-- next request's. Starts from the tokens in the file TOKENS (one per line, >= connections).
local queue = {}
local auth = os.getenv("AUTH")
local failures = 0

function init(args)
  for line in io.lines(os.getenv("TOKENS")) do
    if #line > 0 then table.insert(queue, line) end
  end
end

function request()
  local token = table.remove(queue, 1)
  if token == nil then
    failures = failures + 1
    token = "exhausted"
  end
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = auth,
  }, "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  local token = string.match(body, '"refresh_token":"([^"]+)"')
  if token then table.insert(queue, token) end
end
