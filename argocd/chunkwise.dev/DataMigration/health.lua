-- Argo CD health of a chunkwise DataMigration, from its conditions (Lua 5.1, as Argo's
-- gopher-lua). Healthy: every row processed. Suspended: spec.suspend. Degraded: halted,
-- failed, stalled, or its pod cannot start. Progressing: anything else.
local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function said(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

local status = obj.status or {}
if status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "the operator has not acted on the latest spec yet"
  return hs
end

-- the first rule whose condition has that status decides, in this order
local rules = {
  {"Succeeded", "True", "Healthy", ""},
  {"Halted", "True", "Degraded", "Halted: "},
  {"Succeeded", "False", "Degraded", "Failed: "},
  {"Suspended", "True", "Suspended", ""},
  {"Stalled", "True", "Degraded", "Stalled: "},
  -- its pod cannot start (image pull, refused by admission): waiting will not fix it
  {"Progressing", "False", "Degraded", ""},
}
for _, rule in ipairs(rules) do
  local c = condition(rule[1])
  if c ~= nil and c.status == rule[2] then
    hs.status = rule[3]
    hs.message = rule[4] .. said(c)
    return hs
  end
end

hs.status = "Progressing"
local progress = status.progress or {}
if progress.percentText ~= nil then
  hs.message = (status.phase or "Pending") .. ": " .. progress.percentText .. " done"
else
  hs.message = (status.phase or "Pending") .. ": waiting for the worker's first checkpoint"
end
return hs
