-- wrk script for bench/hls_serve.sh: each connection alternates between the playlist and the
-- newest segment the last playlist response listed (a live HLS player's requests).
local playlist = nil
local newest = nil
local dir = nil
local turn = 0

init = function(args)
  playlist = wrk.path
  dir = playlist:match("^(.*/)")
end

request = function()
  turn = turn + 1
  if newest ~= nil and turn % 2 == 0 then
    return wrk.format("GET", dir .. newest)
  end
  return wrk.format("GET", playlist)
end

response = function(status, headers, body)
  if body ~= nil and body:sub(1, 7) == "#EXTM3U" then
    local last = nil
    for line in body:gmatch("[^\n]+") do
      if line:sub(1, 1) ~= "#" then last = line end
    end
    if last ~= nil then newest = last end
  end
end
